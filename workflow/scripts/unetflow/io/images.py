"""Reading and writing 2D image and mask files and TIFF stacks (PNG, TIFF, JPEG, BMP, GIF).

Images come back as (H, W, C) arrays with C in {1, 3} in RGB order, masks as (H, W) arrays of the stored integer
values (or (H, W, 3) for colour masks). Pixels are returned as stored: no EXIF rotation, no transposition, no
rescaling. Every problem with a file raises `ImageReadError` naming the file. PNG and JPEG are decoded by OpenCV,
TIFF by tifffile, BMP and GIF (palettes) by Pillow; NIfTI volumes are `unetflow.io.nifti`'s.
"""

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from unetflow.io.calibration import calibrated
from unetflow.io.formats import (
    HEAD_BYTES,
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    MASK_WRITE_SUFFIXES,
    ImageReadError,
    checked,
    decode_failed,
    format_suffix,
    is_lossy,
    is_volume,
    tail_truncated,
)
from unetflow.io.labels import LABEL_LIMIT, integer_labels, label_dtype
from unetflow.io.nifti import volume_info
from unetflow.io.tiff import is_lossy_tiff, read_tiff, truncated

ORIENTATION_TAG = 0x0112  # EXIF Orientation
TURNED = (5, 6, 7, 8)  # EXIF orientations a viewer shows turned by 90 degrees (height and width swapped)

_DECODE_ERRORS = (ValueError, OSError, EOFError, IndexError, KeyError, struct.error, zlib.error, cv2.error,
                  UnidentifiedImageError)
_PNG_GREY_TYPES = (0, 4)  # PNG colour types: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA
_PNG_PALETTE_TYPE = 3
_PILLOW_GREY_MODES = ("1", "L", "LA")  # Pillow modes of greyscale BMP, GIF and JPEG files


# ------------------------------------------------------------------------------------------------- decoders


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """(height, width, bit depth, colour type) from a PNG's IHDR chunk (the first 33 bytes)."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    if len(head) < HEAD_BYTES or head[12:16] != b"IHDR":
        raise decode_failed(path, "PNG")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    return height, width, bit_depth, colour_type


def _cv_decode(path: Path, fmt: str) -> np.ndarray:
    """The pixels as OpenCV stores them ((H, W) or (H, W, C) in BGR(A) order), without EXIF rotation."""
    try:
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise decode_failed(path, fmt, error) from error
    if array is None:
        raise decode_failed(path, fmt)
    return array


def _bgr_to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """An OpenCV array as (H, W, channels) in RGB order, alpha dropped."""
    array = array[..., None] if array.ndim == 2 else array
    if channels == 1:
        return np.ascontiguousarray(array[..., :1])
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., 2::-1])


def _pillow_open(path: Path, fmt: str) -> Image.Image:
    """The image opened lazily by Pillow (only the header is read until the pixels are asked for)."""
    try:
        return Image.open(path)
    except _DECODE_ERRORS as error:
        raise decode_failed(path, fmt, error) from error


def _pillow_pixels(path: Path, fmt: str, mode: str | None = None) -> np.ndarray:
    """The first frame's pixels, converted to `mode` when given, else as stored (palette indices for 'P')."""
    with _pillow_open(path, fmt) as image:
        try:
            return np.array(image.convert(mode) if mode else image)
        except _DECODE_ERRORS as error:
            raise decode_failed(path, fmt, error) from error


def _tiff_channels(path: Path, header: dict) -> int:
    """Channels `read_image` returns for a TIFF: colour maps give RGB, a channel axis of ImageJ or OME metadata
    (fluorescence channels) as many as it has; ImageReadError for other than 1 or 3 samples per pixel."""
    channels = 3 if header["palette"] else header["samples"] - header["extra"]
    if channels not in (1, 3) and not header["channel_axis"]:
        raise ImageReadError(f"{path}: {channels} samples per pixel, not greyscale (1) or RGB (3), and no channel "
                             f"axis in ImageJ or OME metadata says they are channels; save the channels as a "
                             f"hyperstack (tifffile.imwrite(path, array, imagej=True, metadata={{'axes': 'CYX'}}), "
                             f"or ZCYX for a stack) or export greyscale or RGB")
    return channels


def _image_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype images are returned in: uint8 and uint16 as stored, bool as uint8, everything else float32."""
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    return dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)


def _tiff_images(path: Path) -> np.ndarray:
    """A TIFF's slices as (S, H, W, C) images: 1-bit as 0/255, colour maps applied, others as `_image_dtype`."""
    stored, header = read_tiff(path, pixels=True)
    _tiff_channels(path, header)
    if header["palette"]:
        colours = (header["colormap"] // 257).astype(np.uint8)  # TIFF colour maps hold 16-bit intensities
        return np.ascontiguousarray(np.moveaxis(colours[:, stored[..., 0]], 0, -1))
    if stored.dtype == np.bool_:
        return stored.astype(np.uint8) * 255
    return stored.astype(_image_dtype(stored.dtype), copy=False)


def _single_slice(path: Path, stack: np.ndarray) -> np.ndarray:
    """The only slice of a (S, H, W, C) stack, or ImageReadError for a multi-page file."""
    if stack.shape[0] != 1:
        raise ImageReadError(f"{path}: the TIFF holds {stack.shape[0]} slices, not one 2D image; pair it with a "
                             f"multi-page image of as many slices, or save one file per slice")
    return stack[0]


# --------------------------------------------------------------------------------------------------- images


def image_info(path) -> dict:
    """Height, width, channels and dtype (as `read_image` / `read_volume` return them) read from the header only.

    `depth` is 1 for 2D files, the number of slices for TIFF stacks, and the third axis for volumes (whose
    height and width are the first two axes). The pixel data is not decoded, so truncation is not detected.
    """
    if is_volume(path):
        return volume_info(path)
    path, fmt = checked(path, IMAGE_SUFFIXES, "an image")
    if fmt == "PNG":
        height, width, bit_depth, colour_type = _png_header(path)
        return dict(height=height, width=width, channels=1 if colour_type in _PNG_GREY_TYPES else 3,
                    dtype="uint16" if bit_depth == 16 else "uint8", depth=1)
    if fmt == "TIFF":
        _, header = read_tiff(path, pixels=False)
        dtype = np.uint8 if header["palette"] else _image_dtype(header["dtype"])
        return dict(height=header["height"], width=header["width"], channels=_tiff_channels(path, header),
                    dtype=np.dtype(dtype).name, depth=header["slices"])
    with _pillow_open(path, fmt) as image:
        width, height = image.size
        return dict(height=height, width=width, channels=1 if image.mode in _PILLOW_GREY_MODES else 3,
                    dtype="uint8", depth=1)


def read_image(path) -> np.ndarray:
    """A 2D image as (H, W, C), C in {1, 3}, RGB order, alpha dropped; uint8/uint16 as stored, other types float32.

    Palette images give their colours, 1-bit images 0/255. Multi-page TIFFs are refused (see `read_stack`).
    """
    path, fmt = checked(path, IMAGE_SUFFIXES, "an image")
    if fmt == "TIFF":
        return _single_slice(path, _tiff_images(path))
    channels = image_info(path)["channels"]
    if fmt in ("PNG", "JPEG"):
        return _bgr_to_channels(_cv_decode(path, fmt), channels)
    pixels = _pillow_pixels(path, fmt, "L" if channels == 1 else "RGB")
    return pixels[..., None] if pixels.ndim == 2 else pixels


def read_stack(path) -> np.ndarray:
    """All slices of a (multi-page) TIFF as (S, H, W, C), each slice as `read_image` would return it."""
    path, _ = checked(path, (".tif", ".tiff"), "an image stack")
    return _tiff_images(path)


def write_image(path, image: np.ndarray) -> Path:
    """Write an (H, W) or (H, W, C) uint8/uint16 image, C in {1, 3} in RGB order, losslessly as PNG or TIFF."""
    path = Path(path)
    if format_suffix(path) not in MASK_WRITE_SUFFIXES:
        raise ImageReadError(f"{path}: images are written as {', '.join(MASK_WRITE_SUFFIXES)} only")
    image = np.asarray(image)
    if format_suffix(path) != ".png":
        tifffile.imwrite(path, image, photometric="rgb" if image.ndim == 3 and image.shape[2] == 3 else "minisblack")
        return path
    bgr = image[..., ::-1] if image.ndim == 3 and image.shape[2] == 3 else image
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ImageReadError(f"{path}: OpenCV could not encode the image as PNG")
    path.write_bytes(encoded.tobytes())
    return path


# ---------------------------------------------------------------------------------------------------- masks


def _png_mask_values(path: Path) -> np.ndarray:
    """A PNG's stored values: palette indices, grey levels (2/4-bit unscaled to 0..2**bits-1, 1-bit as 0/255) or
    RGB."""
    _, _, bit_depth, colour_type = _png_header(path)
    if colour_type == _PNG_PALETTE_TYPE:
        return _pillow_pixels(path, "PNG")
    if colour_type not in _PNG_GREY_TYPES:
        return _bgr_to_channels(_cv_decode(path, "PNG"), 3)
    grey = _bgr_to_channels(_cv_decode(path, "PNG"), 1)[..., 0]
    return grey // (255 // (2**bit_depth - 1)) if 1 < bit_depth < 8 else grey  # libpng scales to 0..255


def _pillow_mask_values(path: Path, fmt: str) -> np.ndarray:
    """A BMP's or GIF's stored values: palette indices, grey levels, 1-bit (black/white) as 0/255, or RGB (alpha
    dropped)."""
    values = _pillow_pixels(path, fmt)
    if values.ndim == 3:
        return values[..., 0] if values.shape[2] == 2 else values[..., :3]
    return values


def _bilevel_as_255(values: np.ndarray) -> np.ndarray:
    """1-bit (boolean) mask values as uint8 0/255, the values of an 8-bit copy (white = set = 255); others as they
    are. A data set that mixes 1-bit and 8-bit 0/255 masks is then binary throughout."""
    return values.astype(np.uint8) * np.uint8(255) if values.dtype == np.bool_ else values


def _stored_mask_values(path: Path, fmt: str) -> np.ndarray:
    """The mask's stored values, (H, W) or (H, W, 3), in its stored dtype."""
    if fmt == "PNG":
        return _png_mask_values(path)
    if fmt == "JPEG":
        return _bgr_to_channels(_cv_decode(path, fmt), 3)  # read_mask collapses grey back to (H, W)
    if fmt == "TIFF":
        stored, _ = read_tiff(path, pixels=True)
        if stored.shape[-1] not in (1, 3):
            raise ImageReadError(f"{path}: a mask needs 1 (labels) or 3 (RGB colours) channels, not "
                                 f"{stored.shape[-1]}; export the label channel alone")
        return _single_slice(path, stored)
    return _pillow_mask_values(path, fmt)


def read_mask(path, limit: int = LABEL_LIMIT) -> np.ndarray:
    """A mask's stored values as an (H, W) uint8/uint16 array: palette indices, not colours; 1-bit (black/white)
    masks as 0/255, the values an 8-bit copy of them holds (a set bit, white, is 255).

    Other integer or float types (e.g. int32 or float TIFF label maps) are converted when every value is a whole
    number in 0..65535 (to uint8 when they fit), and refused otherwise; with `limit` ID_LIMIT (instance masks) ids
    above 65535 are read as uint32.

    An RGB(A) mask whose channels differ somewhere comes back as (H, W, 3) in RGB order, to be mapped through a
    colour table; one whose three channels are equal everywhere comes back as (H, W).
    """
    path, fmt = checked(path, MASK_SUFFIXES, "a mask")
    values = _bilevel_as_255(_stored_mask_values(path, fmt))
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim == 3 and np.array_equal(values[..., 0], values[..., 1]) and \
            np.array_equal(values[..., 0], values[..., 2]):
        values = values[..., 0]
    return np.ascontiguousarray(integer_labels(path, values, limit))


def read_mask_stack(path, limit: int = LABEL_LIMIT) -> np.ndarray:
    """All slices of a (multi-page) TIFF mask as (S, H, W) label values, or (S, H, W, 3) for RGB colour masks."""
    path, _ = checked(path, (".tif", ".tiff"), "a mask stack")
    stored, _ = read_tiff(path, pixels=True)
    stored = stored[..., :3] if stored.shape[-1] >= 3 else stored[..., 0]
    return integer_labels(path, _bilevel_as_255(stored), limit)


def is_lossy_mask(path) -> bool:
    """Whether a mask file's compression alters label values: JPEG files, and TIFFs compressed with JPEG or WebP."""
    return is_lossy(path) or (format_suffix(path) in (".tif", ".tiff") and is_lossy_tiff(path))


def header_value(path, read, default):
    """`read(image)` of a file opened by Pillow (which reads its header only), `default` where Pillow cannot open it
    (the pixel read then names the problem)."""
    try:
        with Image.open(path) as image:
            return read(image)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return default


def mask_palette(path) -> list[int] | None:
    """The colour palette (flat RGB list) of a palette-indexed mask file, None for other masks."""
    return header_value(path, lambda image: image.getpalette() if image.mode == "P" else None, None)


def write_mask(path, labels: np.ndarray, palette: list[int] | None = None, limit: int = LABEL_LIMIT,
               smallest=np.uint8, pixel_size: dict | None = None) -> None:
    """Write an (H, W) integer label array losslessly as PNG or TIFF (by suffix): uint8 if it fits (and `smallest`
    allows), else uint16 (a TIFF also uint32 when `limit` allows it: instance ids); with a `palette` (see
    `mask_palette`) as a palette-indexed PNG; a TIFF with the `pixel_size` of its image (`unetflow.io.
    calibration`). An (H, W, 3) uint8 array is written as RGB."""
    path = writable_mask_path(path)
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[2] == 3 and labels.dtype == np.uint8:
        Image.fromarray(labels, "RGB").save(path)
        return
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be a 2D (H, W) array, not of shape {labels.shape}")
    labels = labels.astype(label_dtype(path, labels, limit if format_suffix(path) != ".png" else LABEL_LIMIT,
                                       smallest))
    if palette is not None and format_suffix(path) == ".png" and labels.dtype == np.uint8:
        image = Image.fromarray(labels, "P")
        image.putpalette(palette)
        image.save(path)
    elif format_suffix(path) == ".png":
        ok, encoded = cv2.imencode(".png", labels)
        if not ok:
            raise ImageReadError(f"{path}: OpenCV could not encode the labels as PNG")
        path.write_bytes(encoded.tobytes())
    else:
        tifffile.imwrite(path, labels, photometric="minisblack", compression="zlib",
                         **calibrated(pixel_size or {}, labels, "YX"))


def write_mask_stack(path, pages: np.ndarray, limit: int = LABEL_LIMIT, smallest=np.uint8,
                     pixel_size: dict | None = None) -> None:
    """Write the pages (S, H, W) of integer labels, or (S, H, W, 3) uint8 colours, losslessly as one multi-page TIFF
    (uint8 if they fit and `smallest` allows, else uint16, uint32 when `limit` allows), with the `pixel_size` of its
    image (`unetflow.io.calibration`)."""
    path = writable_mask_path(path)
    pages = np.asarray(pages)
    if format_suffix(path) not in (".tif", ".tiff"):
        raise ImageReadError(f"{path}: a stack of masks is written as a multi-page TIFF (.tif) only")
    colour = pages.ndim == 4 and pages.shape[3] == 3 and pages.dtype == np.uint8
    if not colour:
        pages = pages.astype(label_dtype(path, pages, limit, smallest))
    kept = calibrated(pixel_size or {}, pages, "ZYX") if not colour else {}
    tifffile.imwrite(path, pages, photometric="rgb" if colour else "minisblack", compression="zlib", **kept)


def writable_mask_path(path) -> Path:
    """`path` as a Path when masks can be written losslessly under its suffix, else ImageReadError naming it."""
    path = Path(path)
    if format_suffix(path) not in MASK_WRITE_SUFFIXES:
        raise ImageReadError(f"{path}: masks are written as {', '.join(MASK_WRITE_SUFFIXES)} only"
                             f"{' (JPEG is lossy and would alter labels)' if is_lossy(path) else ''}; "
                             f"change the output suffix")
    return path


def truncation_problem(path) -> str | None:
    """Cheap check that a 2D file is complete, reading only its tail (or TIFF tags): a problem or None."""
    path = Path(path)
    fmt = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".gif": "GIF", ".jpg": "JPEG", ".jpeg": "JPEG",
           ".bmp": "BMP"}.get(format_suffix(path), "")
    complete = not (truncated(path) if fmt == "TIFF" else tail_truncated(path, fmt))
    return None if complete else f"{path}: the file is truncated (its data ends early); copy or export it again"


def is_one_bit(path) -> bool:
    """Whether a mask file is 1-bit (black and white; its set pixels are read as 255)."""
    return header_value(path, lambda image: image.mode == "1", False)


def exif_orientation(path) -> int:
    """The EXIF orientation of an image file, 1 where it has none; 2-8: a viewer shows it mirrored or turned (TURNED:
    by 90 degrees). Pixels are always read as stored."""
    return header_value(path, lambda image: int(image.getexif().get(ORIENTATION_TAG, 1)), 1)


def size_mismatch_fix(image, shape: tuple[int, int], mask_shape: tuple[int, int]) -> str:
    """What to do about an image whose mask has another size (height, width each): export matching pairs; where the
    image's EXIF orientation turns it to its mask's size, apply the turn; a mask turned by 90 degrees is said so."""
    orientation = exif_orientation(image)
    if orientation in TURNED and tuple(mask_shape) == tuple(shape)[::-1]:
        return (f"its EXIF orientation tag ({orientation}) turns it by 90 degrees where viewers show it, "
                f"and its mask was drawn on that view: export the image with the turn applied (e.g. "
                f"PIL.ImageOps.exif_transpose); pixels are read as stored")
    if tuple(mask_shape) == tuple(shape)[::-1]:
        return "the mask is the image's size turned by 90 degrees (rotated or transposed when saved?): export it " \
               "in the image's orientation"
    return "export matching pairs"


def pixel_problem(path, pixels: np.ndarray) -> str | None:
    """A problem with an image's decoded pixels: NaN or Inf values of a float image; or None."""
    if pixels.dtype.kind != "f" or np.isfinite(pixels).all():
        return None
    return f"{path}: {int(np.count_nonzero(~np.isfinite(pixels)))} pixels are NaN or Inf; replace them (e.g. with 0)"
