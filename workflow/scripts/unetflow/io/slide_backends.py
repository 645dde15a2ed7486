"""The readers behind `unetflow.io.slides.Slide`, chosen by file suffix: tifffile for the TIFF-based formats, OpenSlide
for MRXS (bench/slides.md: tifffile read SVS regions 3.4x faster than OpenSlide, with equal pixels).

`TiffReader`: pyramidal (OME-)TIFF, Aperio SVS and Hamamatsu NDPI. The slide is the first series of the file
(tifffile parses each scanner's layout: SVS levels after its thumbnail, NDPI's 64-bit offsets and JPEG stripes);
its levels are read through tifffile's zarr store, so a region decodes only the tiles it touches (imagecodecs
decodes JPEG, JPEG 2000, LZW, Deflate). The base pixel size in µm comes from the OME-XML (PhysicalSizeX/Y), the
Aperio ImageDescription (`MPP = 0.2520`), or the TIFF tags XResolution and YResolution in centimetre or inch (NDPI).

`OpenSlideReader`: 3DHISTECH MRXS (a .mrxs file and a folder of the same name), which only OpenSlide reads; its pixel
size is OpenSlide's `openslide.mpp-x/y`. openslide-python is imported when such a slide is opened, so its absence
is reported naming the package, never the file.

A reader has `shapes` ((height, width) per level, base first), `channels`, `base_pixel_size` (µm or None),
`read(level, rows, columns)` -> (H, W) or (H, W, C) array for two slices (a step takes every n-th pixel), `close()`.
Pixels whose tiles are damaged raise DamagedRegionError (the rest of the slide still reads); a missing codec raises
ImageReadError.
"""

from pathlib import Path

import numpy as np
import tifffile
import zarr

from unetflow.io.calibration import UNIT_MICRONS, ome_pixel_sizes
from unetflow.io.formats import ImageReadError
from unetflow.io.tiff import failure, is_codec_error

OPENSLIDE_FORMATS = {".mrxs": "MRXS (3DHISTECH)"}
OPENSLIDE_INSTALL = "pip install openslide-python openslide-bin (the versions in requirements.txt)"
BAND = 1024  # rows OpenSlide reads at a time for a selection with a step (the overview)
SQUARE_TOLERANCE = 0.02  # pixel sizes of x and y further apart than this are not square pixels, refused


class DamagedRegionError(ImageReadError):
    """A region of a slide whose tiles cannot be decoded because their data are damaged (not for a missing codec)."""


def open_reader(path: Path):
    """The reader of a slide file by its suffix: OpenSlide for the formats only it reads, tifffile for the rest."""
    if path.suffix.lower() in OPENSLIDE_FORMATS:
        return OpenSlideReader(path)
    return TiffReader(path)


class TiffReader:
    """A TIFF-based slide through tifffile and zarr (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, OSError) as error:
            raise ImageReadError(f"{path}: not a readable TIFF ({error})") from error
        series = self.tif.series[0]
        plane = "YXS" if series.axes.endswith("YXS") else "YX"
        leading = series.shape[:len(series.shape) - len(plane)]
        if not series.axes.endswith(plane) or any(size != 1 for size in leading):
            self.tif.close()
            extra = ", ".join(f"{axis} {size}" for axis, size in zip(series.axes, leading) if size != 1)
            raise ImageReadError(f"{path}: slide axes {series.axes} of shape {series.shape}, but only single-plane "
                                 f"grey (YX) and RGB (YXS) slides are read, and it has more planes ({extra or 'axes'}; "
                                 f"C: channels, Z: focal planes, T: time points); save one plane, or three channels "
                                 f"as RGB, as a pyramidal TIFF")
        self.leading = (0,) * len(leading)  # an SVS series has a Z axis of one focal plane
        self.arrays = [zarr.open(series.aszarr(level=index), mode="r") for index in range(len(series.levels))]
        self.shapes = [tuple(level.shape[len(leading):len(leading) + 2]) for level in series.levels]
        self.channels = 1 if plane == "YX" else int(series.shape[-1])
        self.base_pixel_size = pixel_size_of(self.tif)

    def read(self, level: int, rows: slice, columns: slice) -> np.ndarray:
        try:
            return np.asarray(self.arrays[level][(*self.leading, rows, columns)])
        except (RuntimeError, ValueError, OSError, KeyError) as error:  # from tifffile, imagecodecs or zarr
            problem = failure(self.path, error, self.tif.series[0].keyframe.compression)
            raise (problem if is_codec_error(error) else DamagedRegionError(str(problem))) from error

    def close(self) -> None:
        self.tif.close()


def square_pixel_size(path, sizes: list[float]) -> float:
    """The mean of a slide's pixel sizes of x and y (or the one given); ImageReadError when they are more than
    SQUARE_TOLERANCE apart: regions, levels and annotations are placed in square pixels."""
    if max(sizes) > (1 + SQUARE_TOLERANCE) * min(sizes):
        raise ImageReadError(f"{path}: pixels of {sizes[0]:.4g} x {sizes[1]:.4g} µm (x, y) in its metadata; unetflow "
                             f"reads slides of square pixels only: resample the slide to one pixel size")
    return sum(sizes) / len(sizes)


def pixel_size_of(tif: tifffile.TiffFile) -> float | None:
    """A slide's base pixel size in µm (`square_pixel_size`): the OME-XML's PhysicalSizeX/Y, the Aperio MPP, else the
    TIFF resolution tags in centimetre or inch; None when none is there."""
    if tif.is_ome:
        sizes = ome_pixel_sizes(tif.ome_metadata)
        if sizes:
            return square_pixel_size(tif.filehandle.path, sizes)
    page = tif.pages.first
    if page.is_svs:
        mpp = tifffile.tifffile.svs_description_metadata(page.description).get("MPP")
        if isinstance(mpp, (int, float)) and mpp > 0:
            return float(mpp)
    unit = int(page.tags.valueof("ResolutionUnit", 1))
    resolutions = [page.tags.valueof(name) for name in ("XResolution", "YResolution")]
    if unit not in UNIT_MICRONS or any(value is None for value in resolutions):
        return None
    per_unit = [numerator / denominator for numerator, denominator in resolutions if numerator and denominator]
    return square_pixel_size(tif.filehandle.path, [UNIT_MICRONS[unit] / value for value in per_unit]) \
        if len(per_unit) == 2 else None


class OpenSlideReader:
    """A slide through OpenSlide (see the module docstring); RGB, the transparent pixels outside the scanned areas
    given the slide's background colour."""

    channels = 3

    def __init__(self, path: Path):
        name = OPENSLIDE_FORMATS[path.suffix.lower()]
        try:
            import openslide
        except ImportError as error:
            raise ImageReadError(f"{path}: {name} slides are read by OpenSlide, which is not installed here; "
                                 f"{OPENSLIDE_INSTALL}") from error
        try:
            self.slide = openslide.OpenSlide(path)
        except openslide.OpenSlideError as error:
            raise ImageReadError(f"{path}: OpenSlide cannot open it as an {name} slide ({error}); such a slide is "
                                 f"the .mrxs file and the folder of the same name beside it: copy both") from error
        properties = self.slide.properties
        self.shapes = [(height, width) for width, height in self.slide.level_dimensions]
        self.background = np.frombuffer(bytes.fromhex(properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR,
                                                                     "FFFFFF")), np.uint8)
        sizes = [properties.get(key) for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)]
        self.base_pixel_size = None if None in sizes else square_pixel_size(path, [float(size) for size in sizes])

    def read(self, level: int, rows: slice, columns: slice) -> np.ndarray:
        (top, bottom, row_step), (left, right, column_step) = (
            selection.indices(size) for selection, size in zip((rows, columns), self.shapes[level]))
        shape = (len(range(top, bottom, row_step)), len(range(left, right, column_step)), 3)
        if 0 in shape:
            return np.zeros(shape, np.uint8)
        band = BAND * row_step
        return np.concatenate([self.rgb(level, start, left, min(band, bottom - start), right - left)
                               [::row_step, ::column_step] for start in range(top, bottom, band)])

    def rgb(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """A region (height, width, 3) of a level (OpenSlide places it in base pixels)."""
        scale = self.slide.level_downsamples[level]
        rgba = np.asarray(self.slide.read_region((round(left * scale), round(top * scale)), level,
                                                 (width, height)))
        return np.where(rgba[..., 3:] == 0, self.background, rgba[..., :3])

    def close(self) -> None:
        self.slide.close()
