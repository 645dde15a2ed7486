"""TIFF files (tifffile, codecs from imagecodecs): the first series' geometry, its pixels, the compression and what
is wrong when a file cannot be read (a codec that is not installed, a truncated file, a file that is no TIFF).

Every compression imagecodecs decodes is read (LZW, Deflate/zlib, PackBits, JPEG, zstd, LZMA, WebP, JPEG 2000/XL,
..., striped or tiled). The pixels come back as stored; `unetflow.io.images` turns them into images and masks.
"""

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile

from unetflow.io.formats import ImageReadError, decode_failed

RGB = 2  # TIFF photometric interpretation of RGB images
ALPHA_SAMPLES = (1, 2)  # TIFF extra-sample kinds: associated and unassociated alpha
PALETTE = 3  # TIFF photometric interpretation of colour-mapped images
LOSSY_COMPRESSIONS = (6, 7, 33007, 34892, 34927, 50001)  # JPEG (old-style, new, Aperio, lossy DNG) and WebP
_DECODE_ERRORS = (ValueError, OSError, EOFError, IndexError, KeyError, struct.error, zlib.error, RuntimeError,
                  tifffile.TiffFileError)
_CLASSIC_HEADERS = {b"II*\x00": "<", b"MM\x00*": ">"}  # byte order of classic (not Big) TIFF files


def compression_name(code: int) -> str:
    """'LZW', 'ZSTD', ... for a TIFF compression code; 'unknown compression 12345' for codes no library knows."""
    try:
        return tifffile.COMPRESSION(code).name
    except ValueError:
        return f"unknown compression {code}"


def codec_problem(path: Path, code: int) -> ImageReadError:
    """The error for pixels stored with a compression (code) that cannot be decoded here: names it and the fix."""
    name = compression_name(code)
    if not imagecodecs_loads():
        fix = "install imagecodecs, which decodes it (pip install -r requirements.txt), or repair its installation"
    else:
        fix = (f"imagecodecs has no {name} decoder; convert the file to an uncompressed or Deflate TIFF "
               f"(e.g. tifffile.imwrite(path, tifffile.imread(original), compression='zlib'))")
    return ImageReadError(f"{path}: the TIFF pixels are compressed with {name} (TIFF compression {code}), which "
                          f"this installation cannot decode; {fix}. The file itself is fine")


def imagecodecs_loads() -> bool:
    """Whether imagecodecs is installed and imports (a broken installation is as good as none)."""
    try:
        importlib.import_module("imagecodecs")
    except ImportError:
        return False
    return True


def is_codec_error(error: BaseException) -> bool:
    """Whether a tifffile error says that a decoder is missing (rather than that the data is damaged)."""
    text = str(error)
    return isinstance(error, ImportError) or "imagecodecs" in text or "COMPRESSION" in text


def truncated(path: Path) -> bool:
    """Whether the TIFF ends before the data its tags point to (or, when the tags cannot be read, before the first
    directory's end): the file was cut short in a copy or download."""
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            return any(offset + count > size for page in tif.pages
                       for offset, count in zip(page.dataoffsets, page.databytecounts))
    except _DECODE_ERRORS:
        pass
    with path.open("rb") as handle:
        head = handle.read(10)
    order = _CLASSIC_HEADERS.get(head[:4])
    if order is None or len(head) < 8:
        return len(head) < 8
    directory = struct.unpack(order + "I", head[4:8])[0]
    with path.open("rb") as handle:
        handle.seek(directory)
        count = handle.read(2)
    return len(count) < 2 or directory + 2 + 12 * struct.unpack(order + "H", count)[0] + 4 > size


def failure(path: Path, error: BaseException, code: int | None = None) -> ImageReadError:
    """What is really wrong with a TIFF that tifffile could not read: a missing codec (`code`, the compression of
    the file when known), a truncated file, or damaged data."""
    if code is not None and is_codec_error(error):
        return codec_problem(path, code)
    if truncated(path):
        return ImageReadError(f"{path}: the file is truncated (it ends before the pixel data its header points "
                              f"to); copy or export it again")
    return decode_failed(path, "TIFF", error)


def axis_order(axes: str) -> tuple[list[int], bool]:
    """Axis order that puts a tifffile series as (stack axes..., Y, X[, channel]), and whether it has a channel."""
    channel = next((a for a in "SC" if a in axes), None)
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"TIFF series with axes {axes!r} has no Y and X axes")
    planes = [axes.index("Y"), axes.index("X")] + ([axes.index(channel)] if channel else [])
    return [i for i in range(len(axes)) if i not in planes] + planes, channel is not None


def dropped_samples(page) -> int:
    """How many trailing extra samples are alpha and dropped: every extra sample of an RGB file (writers often mark
    its alpha 'unspecified'), only those marked alpha otherwise (unspecified extra samples of a grey file are
    channels of their own, so a 4-sample grey file is refused, not read as its first channel)."""
    extras = [int(kind) for kind in page.extrasamples or ()]
    if page.photometric == RGB:
        return len(extras)
    return sum(kind in ALPHA_SAMPLES for kind in extras)


def one_stack_axis(path: Path, series, order: list[int], has_channel: bool) -> None:
    """ImageReadError for a series (its `axis_order`) with more than one axis of several planes besides Y, X and
    channels (a time-lapse of z-stacks TZYX, or two unnamed axes QQYX): a stack is read along one axis."""
    stacked = [(series.axes[i], series.shape[i]) for i in order[:len(order) - 2 - has_channel] if series.shape[i] > 1]
    if len(stacked) > 1:
        listed = ", ".join(f"{axis} {size}" for axis, size in stacked)
        raise ImageReadError(
            f"{path}: TIFF axes {series.axes} of shape {tuple(series.shape)} stack the 2D planes along more than one "
            f"axis ({listed}); a stack is read along one (the slices of a z-stack, or the frames of a time-lapse). "
            f"Save one file per time point or position (e.g. tifffile.imwrite('t0.tif', tifffile.imread(path)[0], "
            f"imagej=True)); if an axis is channels, save it with axes metadata (ImageJ hyperstack ZCYX, OME-TIFF)")


def header(tif: tifffile.TiffFile, path: Path) -> dict:
    """Geometry of a TIFF's first series read from the tags only: slices, height, width, stored channels, extra
    (alpha) samples, dtype, palette and colour map (not of ImageJ files, whose colour maps (LUTs) only colour the
    display of grey values), whether the channels are an axis of their own (C: ImageJ or OME metadata, not samples
    of a pixel) and compression (code)."""
    series = tif.series[0]
    page = series.keyframe
    order, has_channel = axis_order(series.axes)
    one_stack_axis(path, series, order, has_channel)
    shape = [series.shape[i] for i in order] + ([] if has_channel else [1])
    palette = page.photometric == PALETTE and not tif.is_imagej
    return dict(slices=int(np.prod(shape[:-3], dtype=int)), height=shape[-3], width=shape[-2], samples=shape[-1],
                extra=dropped_samples(page), dtype=np.dtype(series.dtype), palette=palette,
                colormap=page.colormap if palette else None, channel_axis="C" in series.axes and "S" not in series.axes,
                compression=int(page.compression))


def read_tiff(path: Path, pixels: bool) -> tuple[np.ndarray | None, dict]:
    """The first series as stored, shaped (S, H, W, C) with alpha dropped (None unless `pixels`), and its header.
    A compression without a decoder is refused from the header alone (ImageReadError naming it)."""
    info = None
    try:
        with tifffile.TiffFile(path) as tif:
            info = header(tif, path)
            if info["compression"] in tifffile.TIFF.DECOMPRESSORS and pixels:
                array = tif.series[0].asarray()
                order, has_channel = axis_order(tif.series[0].axes)
    except ImageReadError:
        raise  # a layout unetflow does not read, said as such (the file is fine)
    except (*_DECODE_ERRORS, ImportError) as error:
        raise failure(path, error, info and info["compression"]) from error
    if info["compression"] not in tifffile.TIFF.DECOMPRESSORS:
        raise codec_problem(path, info["compression"])
    if not pixels:
        return None, info
    array = array.transpose(order)
    array = array if has_channel else array[..., None]
    array = array.reshape(-1, *array.shape[-3:])
    return array[..., :info["samples"] - info["extra"]], info


def is_lossy_tiff(path) -> bool:
    """Whether a TIFF's pixels are stored with a lossy compression (JPEG, WebP), which alters label values."""
    try:
        with tifffile.TiffFile(path) as tif:
            return int(tif.series[0].keyframe.compression) in LOSSY_COMPRESSIONS
    except (*_DECODE_ERRORS, ImportError):
        return False  # unreadable: reading the file reports why
