"""Reading and writing the image, mask and volume files users bring (PNG, TIFF, JPEG, BMP, GIF, NIfTI).

Images come back as (H, W, C) arrays with C in {1, 3} in RGB order, masks as (H, W) arrays of the stored integer
values (or (H, W, 3) for colour masks), volumes as nibabel arrays. Pixels are returned as stored: no EXIF rotation,
no transposition, no rescaling. Every problem with a file raises `ImageReadError` naming the file.
PNG and JPEG are decoded by OpenCV, TIFF by tifffile, BMP and GIF (palettes) by Pillow, NIfTI by nibabel.
"""

import struct
import zlib
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
MASK_SUFFIXES = IMAGE_SUFFIXES  # masks come in the same formats; `is_lossy` flags the JPEG ones
VOLUME_SUFFIXES = (".nii", ".nii.gz")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
MASK_WRITE_SUFFIXES = (".png", ".tif", ".tiff")

_COMPOUND_SUFFIXES = (".ome.tiff", ".ome.tif", ".nii.gz")
_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
            ".gif": "GIF", ".nii": "NIfTI", ".nii.gz": "gzipped NIfTI"}
_SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "BMP": (b"BM",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "NIfTI": (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c", b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c"),
    "gzipped NIfTI": (b"\x1f\x8b",),
}
_SUFFIX_OF_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif",
                     "NIfTI": ".nii", "gzipped NIfTI": ".nii.gz"}
_HEAD_BYTES = 33  # PNG signature + IHDR chunk, the longest header read here
_DECODE_ERRORS = (ValueError, OSError, EOFError, IndexError, KeyError, struct.error, zlib.error, cv2.error,
                  UnidentifiedImageError, tifffile.TiffFileError, nib.filebasedimages.ImageFileError)
_PNG_GREY_TYPES = (0, 4)  # PNG colour types: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA
_PNG_PALETTE_TYPE = 3
_PILLOW_GREY_MODES = ("1", "L", "LA")  # Pillow modes of greyscale BMP, GIF and JPEG files
_TIFF_PALETTE = 3  # TIFF photometric interpretation of colour-mapped images


class ImageReadError(ValueError):
    """A file cannot be read (or written) as an image, mask or volume; the message names the file and the fix."""


# --------------------------------------------------------------------------------------------- names and checks


def _suffix(path: Path) -> str:
    """The file's image suffix in lower case ('.nii.gz' and '.ome.tif' count as one), or '' when unknown."""
    name = path.name.lower()
    known = sorted(set(IMAGE_SUFFIXES + VOLUME_SUFFIXES + _COMPOUND_SUFFIXES), key=len, reverse=True)
    return next((s for s in known if name.endswith(s) and len(name) > len(s)), "")


def case_stem(path) -> str:
    """The file name without its image suffix: 'ct_01.nii.gz' -> 'ct_01', 'slide.ome.tif' -> 'slide'."""
    path = Path(path)
    suffix = _suffix(path)
    if not suffix:
        raise ImageReadError(f"{path}: unsupported file suffix; image files end in one of "
                             f"{', '.join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)}")
    return path.name[:-len(suffix)]


def is_lossy(path) -> bool:
    """True for JPEG files, whose compression alters pixel values (and so label values of masks)."""
    return _suffix(Path(path)) in LOSSY_SUFFIXES


def _format_suffix(path: Path) -> str:
    """The suffix that names the file's format: as `_suffix`, with '.ome.tif(f)' counted as '.tif'."""
    suffix = _suffix(path)
    return ".tif" if suffix.startswith(".ome.") else suffix


def _format_of(path: Path, allowed: tuple[str, ...], what: str) -> str:
    """The file's format name ('PNG', 'TIFF', ...), or ImageReadError when its suffix is not one of `allowed`."""
    suffix = _format_suffix(path)
    if suffix not in allowed:
        raise ImageReadError(f"{path}: unsupported suffix {(suffix or path.suffix)!r} for {what}; "
                             f"use one of {', '.join(allowed)}")
    return _FORMATS[suffix]


def _check_file(path: Path, fmt: str) -> None:
    """Raise ImageReadError when the file is missing, empty, or does not start with the signature of `fmt`."""
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file; check the path and the data set configuration")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes); copy or export it again")
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if head.startswith(_SIGNATURES[fmt]):
        return
    actual = next((name for name, sigs in _SIGNATURES.items() if head.startswith(sigs)), None)
    if actual is not None:
        raise ImageReadError(f"{path}: the file is named as {fmt} but holds {actual} data; "
                             f"rename it to end in {_SUFFIX_OF_FORMAT[actual]}")
    raise ImageReadError(f"{path}: not a {fmt} file (it starts with {head[:16]!r}); "
                         f"it may be a text or HTML file saved under an image name; export it again as {fmt}")


def _decode_failed(path: Path, fmt: str, error: Exception | None = None) -> ImageReadError:
    """The error for a file whose signature is right but whose data cannot be decoded."""
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    return ImageReadError(f"{path}: the {fmt} data cannot be decoded: the file is truncated or corrupt{detail}; "
                          f"copy or export it again")


def _checked(path, allowed: tuple[str, ...], what: str) -> tuple[Path, str]:
    """The path and its format after the suffix, existence, size and signature checks."""
    path = Path(path)
    fmt = _format_of(path, allowed, what)
    _check_file(path, fmt)
    return path, fmt


# ------------------------------------------------------------------------------------------------- decoders


def _png_header(path: Path) -> tuple[int, int, int, int]:
    """(height, width, bit depth, colour type) from a PNG's IHDR chunk (the first 33 bytes)."""
    with path.open("rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if len(head) < _HEAD_BYTES or head[12:16] != b"IHDR":
        raise _decode_failed(path, "PNG")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    return height, width, bit_depth, colour_type


def _cv_decode(path: Path, fmt: str) -> np.ndarray:
    """The pixels as OpenCV stores them ((H, W) or (H, W, C) in BGR(A) order), without EXIF rotation."""
    try:
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise _decode_failed(path, fmt, error) from error
    if array is None:
        raise _decode_failed(path, fmt)
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
        raise _decode_failed(path, fmt, error) from error


def _pillow_pixels(path: Path, fmt: str, mode: str | None = None) -> np.ndarray:
    """The first frame's pixels, converted to `mode` when given, else as stored (palette indices for 'P')."""
    with _pillow_open(path, fmt) as image:
        try:
            return np.array(image.convert(mode) if mode else image)
        except _DECODE_ERRORS as error:
            raise _decode_failed(path, fmt, error) from error


def _tiff_order(axes: str) -> tuple[list[int], bool]:
    """Axis order that puts a tifffile series as (stack axes..., Y, X[, channel]), and whether it has a channel."""
    channel = next((a for a in "SC" if a in axes), None)
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"TIFF series with axes {axes!r} has no Y and X axes")
    planes = [axes.index("Y"), axes.index("X")] + ([axes.index(channel)] if channel else [])
    return [i for i in range(len(axes)) if i not in planes] + planes, channel is not None


def _tiff_header(tif: tifffile.TiffFile) -> dict:
    """Geometry of a TIFF's first series read from the tags only: slices, height, width, stored channels, ..."""
    series = tif.series[0]
    page = series.keyframe
    order, has_channel = _tiff_order(series.axes)
    shape = [series.shape[i] for i in order] + ([] if has_channel else [1])
    palette = page.photometric == _TIFF_PALETTE
    return dict(slices=int(np.prod(shape[:-3], dtype=int)), height=shape[-3], width=shape[-2], samples=shape[-1],
                extra=len(page.extrasamples or ()), dtype=np.dtype(series.dtype), palette=palette,
                colormap=page.colormap if palette else None)


def _tiff_read(path: Path, pixels: bool) -> tuple[np.ndarray | None, dict]:
    """The first series as stored, shaped (S, H, W, C) with alpha dropped (None unless `pixels`), and its header."""
    try:
        with tifffile.TiffFile(path) as tif:
            header = _tiff_header(tif)
            if not pixels:
                return None, header
            array = tif.series[0].asarray()
            order, has_channel = _tiff_order(tif.series[0].axes)
    except _DECODE_ERRORS as error:
        raise _decode_failed(path, "TIFF", error) from error
    array = array.transpose(order)
    array = array if has_channel else array[..., None]
    array = array.reshape(-1, *array.shape[-3:])
    return array[..., :header["samples"] - header["extra"]], header


def _tiff_channels(path: Path, header: dict) -> int:
    """Channels `read_image` returns for a TIFF (colour maps give RGB), or ImageReadError for other layouts."""
    channels = 3 if header["palette"] else header["samples"] - header["extra"]
    if channels not in (1, 3):
        raise ImageReadError(f"{path}: {channels} channels per pixel; only greyscale (1) and RGB (3) images "
                             f"are supported; export the channels you need as greyscale or RGB")
    return channels


def _image_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype images are returned in: uint8 and uint16 as stored, bool as uint8, everything else float32."""
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    return dtype if dtype in (np.uint8, np.uint16) else np.dtype(np.float32)


def _tiff_images(path: Path) -> np.ndarray:
    """A TIFF's slices as (S, H, W, C) images: 1-bit as 0/255, colour maps applied, others as `_image_dtype`."""
    stored, header = _tiff_read(path, pixels=True)
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
        raise ImageReadError(f"{path}: the TIFF holds {stack.shape[0]} slices, not one 2D image; "
                             f"read it with read_stack or split it into one file per slice")
    return stack[0]


# --------------------------------------------------------------------------------------------------- images


def image_info(path) -> dict:
    """Height, width, channels and dtype (as `read_image` / `read_volume` return them) read from the header only.

    `depth` is 1 for 2D files, the number of slices for TIFF stacks, and the third axis for volumes (whose
    height and width are the first two axes). The pixel data is not decoded, so truncation is not detected.
    """
    path, fmt = _checked(path, IMAGE_SUFFIXES + VOLUME_SUFFIXES, "an image")
    if fmt == "PNG":
        height, width, bit_depth, colour_type = _png_header(path)
        return dict(height=height, width=width, channels=1 if colour_type in _PNG_GREY_TYPES else 3,
                    dtype="uint16" if bit_depth == 16 else "uint8", depth=1)
    if fmt == "TIFF":
        _, header = _tiff_read(path, pixels=False)
        dtype = np.uint8 if header["palette"] else _image_dtype(header["dtype"])
        return dict(height=header["height"], width=header["width"], channels=_tiff_channels(path, header),
                    dtype=np.dtype(dtype).name, depth=header["slices"])
    if fmt in ("NIfTI", "gzipped NIfTI"):
        image = _nifti_load(path, fmt)
        shape = volume_shape(path, image.shape)
        return dict(height=shape[0], width=shape[1], channels=1, dtype=_volume_dtype(image).name, depth=shape[2])
    with _pillow_open(path, fmt) as image:
        width, height = image.size
        return dict(height=height, width=width, channels=1 if image.mode in _PILLOW_GREY_MODES else 3,
                    dtype="uint8", depth=1)


def read_image(path) -> np.ndarray:
    """A 2D image as (H, W, C), C in {1, 3}, RGB order, alpha dropped; uint8/uint16 as stored, other types float32.

    Palette images give their colours, 1-bit images 0/255. Multi-page TIFFs are refused (see `read_stack`).
    """
    path, fmt = _checked(path, IMAGE_SUFFIXES, "an image")
    if fmt == "TIFF":
        return _single_slice(path, _tiff_images(path))
    channels = image_info(path)["channels"]
    if fmt in ("PNG", "JPEG"):
        return _bgr_to_channels(_cv_decode(path, fmt), channels)
    pixels = _pillow_pixels(path, fmt, "L" if channels == 1 else "RGB")
    return pixels[..., None] if pixels.ndim == 2 else pixels


def read_stack(path) -> np.ndarray:
    """All slices of a (multi-page) TIFF as (S, H, W, C), each slice as `read_image` would return it."""
    path, _ = _checked(path, (".tif", ".tiff"), "an image stack")
    return _tiff_images(path)


# ---------------------------------------------------------------------------------------------------- masks


def _png_mask_values(path: Path) -> np.ndarray:
    """A PNG's stored values: palette indices, grey levels (1/2/4-bit unscaled to 0..2**bits-1) or RGB."""
    _, _, bit_depth, colour_type = _png_header(path)
    if colour_type == _PNG_PALETTE_TYPE:
        return _pillow_pixels(path, "PNG")
    if colour_type not in _PNG_GREY_TYPES:
        return _bgr_to_channels(_cv_decode(path, "PNG"), 3)
    grey = _bgr_to_channels(_cv_decode(path, "PNG"), 1)[..., 0]
    return grey // (255 // (2**bit_depth - 1)) if bit_depth < 8 else grey  # libpng scales low depths to 0..255


def _pillow_mask_values(path: Path, fmt: str) -> np.ndarray:
    """A BMP's or GIF's stored values: palette indices, grey levels, 1-bit as 0/1, or RGB (alpha dropped)."""
    values = _pillow_pixels(path, fmt)
    if values.ndim == 3:
        return values[..., 0] if values.shape[2] == 2 else values[..., :3]
    return values


def _stored_mask_values(path: Path, fmt: str) -> np.ndarray:
    """The mask's stored values, (H, W) or (H, W, 3), in its stored dtype."""
    if fmt == "PNG":
        return _png_mask_values(path)
    if fmt == "JPEG":
        return _bgr_to_channels(_cv_decode(path, fmt), 3)  # read_mask collapses grey back to (H, W)
    if fmt == "TIFF":
        stored, _ = _tiff_read(path, pixels=True)
        if stored.shape[-1] not in (1, 3):
            raise ImageReadError(f"{path}: a mask needs 1 (labels) or 3 (RGB colours) channels, not "
                                 f"{stored.shape[-1]}; export the label channel alone")
        return _single_slice(path, stored)
    return _pillow_mask_values(path, fmt)


def _integer_labels(path: Path, values: np.ndarray) -> np.ndarray:
    """Values as uint8/uint16 (bool -> 0/1; other types only when integral and in 0..65535)."""
    if values.dtype in (np.uint8, np.uint16):
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8)
    if values.size and (not np.all(np.isfinite(values)) or np.any(values != np.round(values))
                        or values.min() < 0 or values.max() > 65535):
        raise ImageReadError(f"{path}: mask values must be whole numbers in 0..65535 ({values.dtype} values "
                             f"from {values.min()} to {values.max()} found); save labels as integers")
    return values.astype(np.uint8 if values.size == 0 or values.max() <= 255 else np.uint16)


def read_mask(path) -> np.ndarray:
    """A mask's stored values as an (H, W) uint8/uint16 array: palette indices, not colours; 1-bit as 0/1.

    Other integer or float types (e.g. int32 or float TIFF label maps) are converted when every value is a whole
    number in 0..65535 (to uint8 when they fit), and refused otherwise.

    An RGB(A) mask whose channels differ somewhere comes back as (H, W, 3) in RGB order, to be mapped through a
    colour table; one whose three channels are equal everywhere comes back as (H, W).
    """
    path, fmt = _checked(path, MASK_SUFFIXES, "a mask")
    values = _stored_mask_values(path, fmt)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim == 3 and np.array_equal(values[..., 0], values[..., 1]) and \
            np.array_equal(values[..., 0], values[..., 2]):
        values = values[..., 0]
    return np.ascontiguousarray(_integer_labels(path, values))


def _label_dtype(path: Path, labels: np.ndarray) -> np.dtype:
    """uint8 when the labels fit, else uint16; ValueError for non-integer, negative or too large labels."""
    if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be an integer array, not {labels.dtype}")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0 or high > 65535:
        raise ValueError(f"{path}: labels must lie in 0..65535 to be stored losslessly, found {low}..{high}")
    return np.dtype(np.uint8 if high <= 255 else np.uint16)


def mask_palette(path) -> list[int] | None:
    """The colour palette (flat RGB list) of a palette-indexed mask file, None for other masks."""
    try:
        with Image.open(path) as image:
            return image.getpalette() if image.mode == "P" else None
    except (OSError, ValueError, UnidentifiedImageError):
        return None


def write_mask(path, labels: np.ndarray, palette: list[int] | None = None) -> None:
    """Write an (H, W) integer label array losslessly as PNG or TIFF (by suffix): uint8 if it fits, else uint16;
    with a `palette` (see `mask_palette`) as a palette-indexed PNG. An (H, W, 3) uint8 array is written as RGB."""
    path = Path(path)
    if _format_suffix(path) not in MASK_WRITE_SUFFIXES:
        raise ImageReadError(f"{path}: masks are written as {', '.join(MASK_WRITE_SUFFIXES)} only"
                             f"{' (JPEG is lossy and would alter labels)' if is_lossy(path) else ''}; "
                             f"change the output suffix")
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[2] == 3 and labels.dtype == np.uint8:
        Image.fromarray(labels, "RGB").save(path)
        return
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be a 2D (H, W) array, not of shape {labels.shape}")
    labels = labels.astype(_label_dtype(path, labels))
    if palette is not None and _format_suffix(path) == ".png" and labels.dtype == np.uint8:
        image = Image.fromarray(labels, "P")
        image.putpalette(palette)
        image.save(path)
    elif _format_suffix(path) == ".png":
        ok, encoded = cv2.imencode(".png", labels)
        if not ok:
            raise ImageReadError(f"{path}: OpenCV could not encode the labels as PNG")
        path.write_bytes(encoded.tobytes())
    else:
        tifffile.imwrite(path, labels, photometric="minisblack", compression="zlib")


# -------------------------------------------------------------------------------------------------- volumes


def _nifti_load(path: Path, fmt: str):
    """The NIfTI image with its header read and its data left on disk."""
    try:
        return nib.load(path)
    except _DECODE_ERRORS as error:
        raise _decode_failed(path, fmt, error) from error


def volume_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape of a volume: trailing length-1 axes dropped, a 2D image given depth 1; 4D+ refused."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageReadError(f"{path}: a {len(shape)}D volume of shape {shape}; only 3D volumes are supported; "
                             f"split time series or channels into one 3D file each")
    return (shape + (1, 1))[:3]


def volume_grid(path) -> tuple[tuple[int, int, int], np.ndarray]:
    """The 3D shape (see `volume_shape`) and the voxel-to-world affine of a NIfTI file, from its header."""
    path, fmt = _checked(path, VOLUME_SUFFIXES, "a volume")
    image = _nifti_load(path, fmt)
    return volume_shape(path, image.shape), image.affine


def _volume_dtype(image) -> np.dtype:
    """The dtype `read_volume` returns: the stored one, or float32 when the header scales the values."""
    scaled = image.dataobj.slope != 1 or image.dataobj.inter != 0
    return np.dtype(np.float32) if scaled else np.dtype(image.get_data_dtype())


def read_volume(path) -> tuple[np.ndarray, "nib.Nifti1Image"]:
    """A NIfTI volume as a 3D (X, Y, Z) array (stored dtype, float32 if scaled) and the nibabel image.

    Raises ImageReadError for 4D data, NaN or Inf values, and non-numeric (e.g. RGB) voxels.
    """
    path, fmt = _checked(path, VOLUME_SUFFIXES, "a volume")
    image = _nifti_load(path, fmt)
    shape = volume_shape(path, image.shape)
    dtype = _volume_dtype(image)
    if dtype.kind not in "iuf":
        raise ImageReadError(f"{path}: voxels of type {dtype} are not numbers; store one intensity per voxel")
    try:
        data = np.asarray(image.dataobj, dtype=dtype).reshape(shape)
    except _DECODE_ERRORS as error:
        raise _decode_failed(path, fmt, error) from error
    if dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ImageReadError(f"{path}: {np.count_nonzero(~np.isfinite(data))} voxels are NaN or Inf; "
                             f"replace them (e.g. by the background value) before training")
    return data, image


def write_volume(path, labels: np.ndarray, like) -> None:
    """Write a 3D integer label volume in the stored shape, affine and header of the reference nibabel image
    `like`, without its intensity scaling, display range and description (which describe the image, not labels)."""
    path = Path(path)
    _format_of(path, VOLUME_SUFFIXES, "a volume")
    labels = np.asarray(labels)
    if labels.shape != volume_shape(path, like.shape):
        raise ValueError(f"{path}: labels of shape {labels.shape} do not match the reference volume {like.shape}")
    labels = labels.astype(_label_dtype(path, labels)).reshape(like.shape)
    image = type(like)(labels, like.affine, like.header)
    image.set_data_dtype(labels.dtype)
    image.header.set_slope_inter(1, 0)
    image.header["cal_min"] = image.header["cal_max"] = 0
    image.header["descrip"] = b""
    nib.save(image, path)
