"""File formats: which suffixes are images, masks and volumes, which folders are DICOM series (volumes too) or object
masks, which DICOM files are SEG masks (volumes too, on the grid of their series), a file's case stem, and the checks
every reader makes before decoding (the file exists, is not empty, and starts with the signature its suffix promises).

Dependency-free, so that the Snakefile can use it to see the data set at DAG time.
"""

import gzip
import zlib
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif")
MASK_SUFFIXES = IMAGE_SUFFIXES  # masks come in the same formats; `is_lossy` flags the JPEG ones
VOLUME_SUFFIXES = (".nii", ".nii.gz")
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs")  # whole-slide scanner formats (unetflow.io.slides): segmented only
ANNOTATION_SUFFIXES = (".geojson",)  # polygon annotations (QuPath's GeoJSON export), masks of their image
COCO_SUFFIX = ".json"  # COCO object annotations (polygons, run-length masks) of a folder of images
OBJECT_FOLDER = "masks"  # an object folder of this name takes its parent's name: <case>/masks/<object>.png (DSB 2018)
LOSSY_SUFFIXES = (".jpg", ".jpeg")
MASK_WRITE_SUFFIXES = (".png", ".tif", ".tiff")

_COMPOUND_SUFFIXES = (".ome.tiff", ".ome.tif", ".nii.gz", ".seg.dcm")
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
HEAD_BYTES = 33  # PNG signature + IHDR chunk, the longest header read here
DICOM_SUFFIX = ".dcm"
DICOM_MAGIC_OFFSET = 128  # a DICOM file: a 128-byte preamble, then b"DICM"
SEG_SUFFIX = ".seg.dcm"  # the DICOM SEG written beside the NIfTI mask of a series (infer.dicom_seg)
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")  # Segmentation, Label Map Seg.
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR, the index of a DICOM CD or export, not an image
META_BYTES = 512  # the file meta information of a DICOM file, where its SOP class is, lies within its first bytes


class ImageReadError(ValueError):
    """A file cannot be read (or written) as an image, mask or volume; the message names the file and the fix."""


def _suffix(path: Path) -> str:
    """The file's image suffix in lower case ('.nii.gz' and '.ome.tif' count as one), or '' when unknown."""
    name = path.name.lower()
    known = sorted(set(IMAGE_SUFFIXES + VOLUME_SUFFIXES + SLIDE_SUFFIXES + ANNOTATION_SUFFIXES + _COMPOUND_SUFFIXES
                       + (DICOM_SUFFIX,)), key=len, reverse=True)
    return next((s for s in known if name.endswith(s) and len(name) > len(s)), "")


def is_dicom_file(path: Path) -> bool:
    """Whether a file is DICOM: named *.dcm or holding b"DICM" after the 128-byte preamble (scanners often write
    files without a suffix)."""
    if path.name.lower().endswith(DICOM_SUFFIX):
        return True
    with path.open("rb") as handle:
        return handle.read(DICOM_MAGIC_OFFSET + 4)[DICOM_MAGIC_OFFSET:] == b"DICM"


def sop_class(path: Path) -> str:
    """The SOP class UID of a DICOM file as its file meta information gives it (MediaStorageSOPClassUID, always
    explicit VR little endian), or '' without one."""
    with path.open("rb") as handle:
        head = handle.read(META_BYTES)
    at = head.find(b"\x02\x00\x02\x00UI", DICOM_MAGIC_OFFSET + 4)
    if at < 0:
        return ""
    length = int.from_bytes(head[at + 6:at + 8], "little")
    return head[at + 8:at + 8 + length].rstrip(b"\x00 ").decode("ascii", "replace")


def is_seg_file(path) -> bool:
    """Whether `path` is a DICOM Segmentation (SEG) file, as annotation tools (3D Slicer, OHIF) save masks: a file
    named *.dcm of one of SEG_SOP_CLASSES."""
    path = Path(path)
    return path.name.lower().endswith(DICOM_SUFFIX) and path.is_file() and sop_class(path) in SEG_SOP_CLASSES


def is_series(path) -> bool:
    """Whether `path` is a DICOM series folder: a folder with a DICOM file that is neither a SEG nor a DICOMDIR
    among its direct children (its slices)."""
    path = Path(path)
    return path.is_dir() and any(child.is_file() and is_dicom_file(child) and not is_seg_file(child)
                                 and not is_media_directory(child) for child in path.iterdir())


def is_media_directory(path: Path) -> bool:
    """Whether a DICOM file is a DICOMDIR, the index at the root of a DICOM CD or export (its series lie deeper)."""
    return path.name.upper() == "DICOMDIR" or sop_class(path) == MEDIA_DIRECTORY


def object_files(folder) -> list[Path]:
    """The object masks of an object folder (see `is_object_folder`), in file-name order: its mask files, hidden
    files (e.g. macOS's `._` copies) aside."""
    return sorted(child for child in Path(folder).iterdir() if not child.name.startswith(".") and child.is_file()
                  and child.name.lower().endswith(MASK_SUFFIXES))


def is_object_folder(path) -> bool:
    """Whether `path` is a folder of object masks, one 2D mask file per object (`unetflow.io.object_masks`): a folder
    whose direct children (hidden files aside) are all mask files, at least one."""
    path = Path(path)
    if not path.is_dir():
        return False
    children = [child for child in path.iterdir() if not child.name.startswith(".")]
    return bool(children) and len(object_files(path)) == len(children)


def case_stem(path) -> str:
    """The file name without its image suffix: 'ct_01.nii.gz' -> 'ct_01', 'slide.ome.tif' -> 'slide', 'ct_01.seg.dcm'
    and 'ct_01.dcm' -> 'ct_01'; a DICOM series folder's name: 'images/case01/' -> 'case01'; an object folder's name,
    or its parent's where it is named OBJECT_FOLDER ('case01/masks/' -> 'case01', the DSB 2018 layout)."""
    path = Path(path)
    if is_series(path):
        return path.name
    if is_object_folder(path):
        return path.parent.name if path.name.lower() == OBJECT_FOLDER else path.name
    suffix = _suffix(path)
    if not suffix:
        raise ImageReadError(f"{path}: unsupported file suffix; image files end in one of "
                             f"{', '.join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)} (DICOM SEG masks in {DICOM_SUFFIX})")
    return path.name[:-len(suffix)]


def is_lossy(path) -> bool:
    """True for JPEG files, whose compression alters pixel values (and so label values of masks)."""
    return _suffix(Path(path)) in LOSSY_SUFFIXES


def is_coco(path) -> bool:
    """True for a COCO annotation file (*.json, `unetflow.io.coco`): the masks of a folder of images."""
    return str(path).lower().endswith(COCO_SUFFIX)


def is_annotation(path) -> bool:
    """True for GeoJSON polygon annotations (`unetflow.io.annotations`)."""
    return str(path).lower().endswith(ANNOTATION_SUFFIXES)


def is_volume(path) -> bool:
    """True for NIfTI files (.nii, .nii.gz), DICOM series folders and DICOM files (*.dcm: read as SEG masks)."""
    return str(path).lower().endswith(VOLUME_SUFFIXES + (DICOM_SUFFIX,)) or is_series(path)


def volume_suffix(path) -> str:
    """'.nii.gz' or '.nii', the suffix a prediction of the volume at `path` is written with (a DICOM series':
    '.nii.gz')."""
    return ".nii" if Path(path).name.lower().endswith(".nii") else ".nii.gz"


def seg_path(mask_path) -> Path:
    """Where the DICOM SEG of a series whose NIfTI mask is `mask_path` (<name>.nii.gz) goes: <name>.seg.dcm."""
    mask_path = Path(mask_path)
    return mask_path.with_name(mask_path.name.split(".nii")[0] + SEG_SUFFIX)


def format_suffix(path) -> str:
    """The suffix that names the file's format: as `_suffix`, with '.ome.tif(f)' counted as '.tif'."""
    suffix = _suffix(Path(path))
    return ".tif" if suffix.startswith(".ome.") else suffix


def format_of(path: Path, allowed: tuple[str, ...], what: str) -> str:
    """The file's format name ('PNG', 'TIFF', ...), or ImageReadError when its suffix is not one of `allowed`."""
    suffix = format_suffix(path)
    if suffix not in allowed:
        raise ImageReadError(f"{path}: unsupported suffix {(suffix or path.suffix)!r} for {what}; "
                             f"use one of {', '.join(allowed)}")
    return _FORMATS[suffix]


def check_file(path: Path, fmt: str) -> None:
    """Raise ImageReadError when the file is missing, empty, or does not start with the signature of `fmt`."""
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file; check the path and the data set configuration")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes); copy or export it again")
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    if head.startswith(_SIGNATURES[fmt]):
        return
    actual = next((name for name, sigs in _SIGNATURES.items() if head.startswith(sigs)), None)
    if actual is not None:
        raise ImageReadError(f"{path}: the file is named as {fmt} but holds {actual} data; "
                             f"rename it to end in {_SUFFIX_OF_FORMAT[actual]}")
    raise ImageReadError(f"{path}: not a {fmt} file (it starts with {head[:16]!r}); "
                         f"it may be a text or HTML file saved under an image name; export it again as {fmt}")


def checked(path, allowed: tuple[str, ...], what: str) -> tuple[Path, str]:
    """The path and its format after the suffix, existence, size and signature checks."""
    path = Path(path)
    fmt = format_of(path, allowed, what)
    check_file(path, fmt)
    return path, fmt


def tail_truncated(path: Path, fmt: str) -> bool:
    """Whether a PNG, GIF, JPEG or BMP file lacks its end marker (or, for BMP, the size its header gives), read from
    its first and last bytes only; False for other formats."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(6)
        handle.seek(max(0, size - 64))
        tail = handle.read()
    if fmt == "PNG":
        return not tail.endswith(b"IEND\xaeB`\x82")
    if fmt == "GIF":
        return not tail.rstrip(b"\x00").endswith(b";")
    if fmt == "JPEG":
        return b"\xff\xd9" not in tail
    if fmt == "BMP":
        return size < int.from_bytes(head[2:6], "little")
    return fmt == "gzipped NIfTI" and _gzip_ends_early(path)


def _gzip_ends_early(path: Path) -> bool:
    """Whether a gzip stream ends before its end marker (decompressed in chunks, on the error path only)."""
    try:
        with gzip.open(path) as stream:
            while stream.read(1 << 24):
                pass
    except EOFError:
        return True
    except (OSError, zlib.error):
        return False
    return False


def decode_failed(path: Path, fmt: str, error: Exception | None = None) -> ImageReadError:
    """The error for a file whose signature is right but whose data cannot be decoded: truncated (its end is
    missing), or damaged inside."""
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    if isinstance(error, EOFError) or "ended before" in str(error) or tail_truncated(path, fmt):
        return ImageReadError(f"{path}: the {fmt} data cannot be decoded: the file is truncated (its data ends "
                              f"early){detail}; copy or export it again")
    return ImageReadError(f"{path}: the {fmt} data cannot be decoded{detail}: the file is damaged inside (its "
                          f"header and length are intact); copy or export it again")
