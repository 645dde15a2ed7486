"""Whole-slide images: pyramidal (OME-)TIFF, Aperio SVS, Hamamatsu NDPI and 3DHISTECH MRXS files read lazily by
region, never decoded whole (the readers, chosen by suffix, are in `unetflow.io.slide_backends`).

A slide has levels (the pyramid's resolutions, base first) and a base pixel size in µm from the format's metadata;
each level's pixel size is the base one times its downsample.
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from unetflow.io.formats import SLIDE_SUFFIXES, ImageReadError
from unetflow.io.slide_backends import open_reader

log = logging.getLogger("unetflow.io.slides")

OVERVIEW_PIXELS = 4_000_000  # at most this many pixels of the smallest level are read for tissue and statistics
LEVEL_TOLERANCE = 0.02  # relative: a level within 2% of the pixel size wanted is taken as it is
ZOOM_TOLERANCE = 0.08   # ... and one within 8% when none is nearer, saying so: inside the training's zoom range


@dataclass(frozen=True)
class Level:
    """One resolution of a slide: its index, size (height, width), downsample from the base and pixel size in µm
    (None when the slide has none)."""
    index: int
    shape: tuple[int, int]
    downsample: float
    pixel_size: float | None


def is_slide(path) -> bool:
    """Whether a file is a whole-slide image: a scanner format by its suffix (SLIDE_SUFFIXES; opened, or refused with
    the reason, as a slide), or a TIFF whose tiled first series has more than one level."""
    suffix = Path(path).suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1 and tif.series[0].keyframe.is_tiled
    except (tifffile.TiffFileError, OSError, IndexError):
        return False


class Slide:
    """An open slide: its `levels`, `channels` and `read_region` of any level (use as a context manager)."""

    def __init__(self, path):
        self.path = Path(path)
        self.reader = open_reader(self.path)
        self.base_pixel_size = self.reader.base_pixel_size
        base = self.reader.shapes[0]
        self.levels = [Level(index, shape, base[1] / shape[1],
                             None if self.base_pixel_size is None else self.base_pixel_size * base[1] / shape[1])
                       for index, shape in enumerate(self.reader.shapes)]

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.reader.close()

    @property
    def channels(self) -> int:
        return self.reader.channels

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
        decoded, saying whether a codec is missing or the data damaged (then DamagedRegionError: the rest of the
        slide still reads)."""
        region = self.reader.read(level, *selection)
        return region[None] if region.ndim == 2 else np.moveaxis(region, -1, 0)


def choose_level(slide: Slide, wanted: float | None, key: str) -> tuple[Level, int]:
    """The level to read for a wanted pixel size (µm) and the whole factor it is still to be block-averaged by: of
    the levels and their whole multiples, the one nearest the wanted size (any within LEVEL_TOLERANCE counts as
    exact; the coarsest level among equals), if within ZOOM_TOLERANCE (logged when over LEVEL_TOLERANCE: scanners'
    pixel sizes, 0.263 µm say, give no exact multiple of a round size). ImageReadError naming the file and the config
    `key` when the slide has no pixel size or no level comes near enough."""
    if slide.base_pixel_size is None:
        raise ImageReadError(f"{slide.path}: the slide's metadata give no pixel size (no OME PhysicalSizeX/Y, no "
                             f"Aperio MPP, no TIFF resolution in centimetre or inch, no OpenSlide mpp); write it "
                             f"into the file")
    if wanted is None:
        raise ImageReadError(f"{slide.path}: a slide is predicted at the pixel size its model was trained on, but "
                             f"{key} is not set; set it (µm per pixel of the training images)")
    candidates = []
    for level in sorted(slide.levels, key=lambda candidate: -candidate.pixel_size):  # coarsest first
        factor = max(1, round(wanted / level.pixel_size))
        error = abs(level.pixel_size * factor / wanted - 1)
        candidates.append((0.0 if error <= LEVEL_TOLERANCE else error, level, factor))
    error, level, factor = min(candidates, key=lambda candidate: candidate[0])  # the first, coarsest, of equals
    if error > ZOOM_TOLERANCE:
        sizes = ", ".join(f"{level.pixel_size:.4g}" for level in slide.levels)
        raise ImageReadError(f"{slide.path}: no level of pixel size {sizes} µm, nor a whole multiple of one, comes "
                             f"within {ZOOM_TOLERANCE:.0%} of {key} = {wanted:g} µm; choose a pixel size a level "
                             f"gives, or a whole multiple of one")
    if error:
        log.info("%s: read at %.4g µm per pixel (level %d of %.4g µm, %d x %d blocks), %+.1f %% from the %g µm "
                 "wanted (the training's zoom augmentation spans +-10 %%)", slide.path, level.pixel_size * factor,
                 level.index, level.pixel_size, factor, factor, 100 * (level.pixel_size * factor / wanted - 1), wanted)
    return level, factor


def block_mean(region: np.ndarray, factor: int) -> np.ndarray:
    """A region (C, H, W) reduced by a whole `factor` by averaging factor x factor blocks, float32 (a partial block
    at the far edges padded by repeating its last row or column)."""
    if factor == 1:
        return region
    channels, height, width = region.shape
    out = (math.ceil(height / factor), math.ceil(width / factor))
    padded = np.pad(region, ((0, 0), (0, out[0] * factor - height), (0, out[1] * factor - width)), mode="edge")
    return padded.reshape(channels, out[0], factor, out[1], factor).mean(axis=(2, 4), dtype=np.float32)
