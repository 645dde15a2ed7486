"""Whole-slide images: pyramidal (OME-)TIFF files read lazily by region, never decoded whole.

A slide is the first series of a tiled TIFF; its levels are the pyramid's resolutions (SubIFDs or OME pyramid
pages), read through tifffile's zarr store, so a region decodes only the tiles it touches (imagecodecs decodes JPEG,
LZW, Deflate). Its pixel size in µm comes from the OME-XML (PhysicalSizeX/Y) or from the TIFF tags XResolution and
YResolution with ResolutionUnit centimetre or inch; each level's is the base pixel size times its downsample.
"""

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import zarr

from unetflow.io.formats import ImageReadError
from unetflow.io.tiff import failure

MICRONS = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
UNIT_MICRONS = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: inch, centimetre
OVERVIEW_PIXELS = 4_000_000  # at most this many pixels of the smallest level are read for tissue and statistics
LEVEL_TOLERANCE = 0.02  # relative: a level within 2% of the pixel size wanted is taken as it is


@dataclass(frozen=True)
class Level:
    """One resolution of a slide: its index, size (height, width), downsample from the base and pixel size in µm
    (None when the slide has none)."""
    index: int
    shape: tuple[int, int]
    downsample: float
    pixel_size: float | None


def is_slide(path) -> bool:
    """Whether a file is a pyramidal TIFF: a tiled first series with more than one level."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1 and tif.series[0].keyframe.is_tiled
    except (tifffile.TiffFileError, OSError, IndexError):
        return False


class Slide:
    """An open pyramidal TIFF: its `levels` and `read_region` of any level (use as a context manager)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.tif = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, OSError) as error:
            raise ImageReadError(f"{self.path}: not a readable TIFF ({error})") from error
        series = self.tif.series[0]
        self.axes = series.axes
        if self.axes not in ("YX", "YXS"):
            self.tif.close()
            raise ImageReadError(f"{self.path}: slide axes {self.axes}, but only grey (YX) and RGB (YXS) slides are "
                                 f"read; convert it to a pyramidal RGB or grey TIFF")
        self.arrays = [zarr.open(series.aszarr(level=index), mode="r") for index in range(len(series.levels))]
        self.base_pixel_size = pixel_size_of(self.tif)
        base = series.levels[0].shape[:2]
        self.levels = [Level(index, tuple(level.shape[:2]), base[1] / level.shape[1],
                             None if self.base_pixel_size is None else self.base_pixel_size * base[1] / level.shape[1])
                       for index, level in enumerate(series.levels)]

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.tif.close()

    @property
    def channels(self) -> int:
        return 1 if self.axes == "YX" else int(self.tif.series[0].shape[-1])

    def read_region(self, level: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The pixels (C, height, width) of a level from (top, left), clipped to the level; only the tiles it
        touches are decoded."""
        return self.pixels(level, (slice(top, top + height), slice(left, left + width)))

    def overview(self, max_pixels: int = OVERVIEW_PIXELS) -> np.ndarray:
        """The smallest level (C, H, W), taken at every n-th pixel where it has more than `max_pixels` (decoded a
        tile at a time, so a pyramid without small levels does not fill the memory)."""
        height, width = self.levels[-1].shape
        step = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
        return self.pixels(len(self.levels) - 1, (slice(None, None, step), slice(None, None, step)))

    def pixels(self, level: int, selection: tuple[slice, slice]) -> np.ndarray:
        """A selection (rows, columns) of a level as (C, H, W); ImageReadError naming the file when a tile cannot be
        decoded, saying whether a codec is missing or the data damaged."""
        try:
            region = np.asarray(self.arrays[level][selection])
        except (RuntimeError, ValueError, OSError, KeyError) as error:  # from tifffile, imagecodecs or zarr
            raise failure(self.path, error, self.tif.series[0].keyframe.compression) from error
        return region[None] if region.ndim == 2 else np.moveaxis(region, -1, 0)


def pixel_size_of(tif: tifffile.TiffFile) -> float | None:
    """A slide's base pixel size in µm (the mean of x and y): the OME-XML's PhysicalSizeX/Y, else the TIFF
    resolution tags in centimetre or inch; None when neither is there."""
    if tif.is_ome:
        sizes = ome_pixel_sizes(tif.ome_metadata)
        if sizes:
            return sum(sizes) / len(sizes)
    page = tif.pages.first
    unit = int(page.tags.valueof("ResolutionUnit", 1))
    resolutions = [page.tags.valueof(name) for name in ("XResolution", "YResolution")]
    if unit not in UNIT_MICRONS or any(value is None for value in resolutions):
        return None
    per_unit = [numerator / denominator for numerator, denominator in resolutions if numerator and denominator]
    return UNIT_MICRONS[unit] / (sum(per_unit) / len(per_unit)) if len(per_unit) == 2 else None


def ome_pixel_sizes(xml: str) -> list[float]:
    """PhysicalSizeX and PhysicalSizeY of the first OME image in µm (each only when given)."""
    pixels = next((node for node in ElementTree.fromstring(xml).iter() if node.tag.endswith("Pixels")), None)
    if pixels is None:
        return []
    sizes = []
    for axis in "XY":
        value, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is not None and unit in MICRONS:
            sizes.append(float(value) * MICRONS[unit])
    return sizes


def choose_level(slide: Slide, wanted: float | None, key: str) -> tuple[Level, int]:
    """The level to predict on for a wanted pixel size (µm) and the integer factor it is still to be reduced by: the
    coarsest level not coarser than wanted (within LEVEL_TOLERANCE), then block-averaged by `factor` when the wanted
    size is a whole multiple of its pixel size. ImageReadError naming the file and the config `key` when the slide
    has no pixel size or no level reaches the wanted size by a whole factor."""
    if slide.base_pixel_size is None:
        raise ImageReadError(f"{slide.path}: the slide's metadata give no pixel size (no OME PhysicalSizeX/Y, no "
                             f"TIFF resolution in centimetre or inch); write it into the file")
    if wanted is None:
        raise ImageReadError(f"{slide.path}: a slide is predicted at the pixel size its model was trained on, but "
                             f"{key} is not set; set it (µm per pixel of the training images)")
    fine_enough = [level for level in slide.levels if level.pixel_size <= wanted * (1 + LEVEL_TOLERANCE)]
    if fine_enough:
        level = max(fine_enough, key=lambda candidate: candidate.pixel_size)
        factor = wanted / level.pixel_size
        if abs(factor - round(factor)) <= LEVEL_TOLERANCE * factor:
            return level, max(1, round(factor))
    sizes = ", ".join(f"{level.pixel_size:.4g}" for level in slide.levels)
    raise ImageReadError(f"{slide.path}: no level of pixel size {sizes} µm reaches {key} = {wanted:g} µm by a whole "
                         f"factor; predict it at a pixel size a level gives, or a whole multiple of one")


def block_mean(region: np.ndarray, factor: int) -> np.ndarray:
    """A region (C, H, W) reduced by a whole `factor` by averaging factor x factor blocks, float32 (a partial block
    at the far edges padded by repeating its last row or column)."""
    if factor == 1:
        return region
    channels, height, width = region.shape
    out = (math.ceil(height / factor), math.ceil(width / factor))
    padded = np.pad(region, ((0, 0), (0, out[0] * factor - height), (0, out[1] * factor - width)), mode="edge")
    return padded.reshape(channels, out[0], factor, out[1], factor).mean(axis=(2, 4), dtype=np.float32)
