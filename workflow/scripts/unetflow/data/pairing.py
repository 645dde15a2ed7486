"""Pairing: which files form the cases of a data set.

Images and masks are matched by stem: a mask's stem is `mask_prefix` + the image stem + `mask_suffix`, and
`mask_suffix: auto` accepts any of AUTO_MASK_SUFFIXES; a DICOM series folder is one image, a volume, and its name is
its stem (images/case01/ pairs with masks/case01.nii.gz, masks/case01.seg.dcm (a DICOM SEG) or masks/case01/ (a
series of label values)). A folder of object masks, one file per object, is the mask of the image of its name
(masks/case01/*.png), or of its parent's name when named `masks` (case01/masks/*.png beside case01/images/case01.png,
the DSB 2018 layout). Other layouts (nnU-Net's, a folder per case, sites of repeated names) are in
`unetflow.data.layouts`. Alternatively a manifest file (CSV or Parquet) lists image, mask[, group, split] per row.
Regions of interest are matched to images in `unetflow.data.rois`.

Dependency-light (pandas only for Parquet manifests): the Snakefile uses `data_files` to know ingest's inputs.
"""

import csv
import difflib
import glob
import os
from collections import Counter
from functools import partial
from pathlib import Path

from unetflow.data.data_warnings import short_name
from unetflow.data.layouts import case_folder_pairs, duplicate_problem, image_case, site_pairs, with_site_names
from unetflow.data.unpaired import (
    UnpairedImage,
    by_stem,
    match_by_stem,
    match_mask,
    unpaired_mask,
    unread_partner_problem,
)
from unetflow.io.formats import (
    ANNOTATION_SUFFIXES,
    DICOM_SUFFIX,
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    SLIDE_SUFFIXES,
    VOLUME_SUFFIXES,
    ImageReadError,
    case_stem,
    is_coco,
    is_object_folder,
    is_series,
)

AUTO_MASK_SUFFIXES = ("", "_mask", "_masks", "-mask", "_seg", "-seg", "_label", "_labels", "-label", "_gt", "-gt",
                      "_segmentation")
CLOSE_NAME = 0.6        # an unpaired mask whose stem is this like an image's (`name_likeness`) is named ...
CLOSE_NAME_MASKS = 500  # ... among the first this many unpaired masks
SPLITS = ("train", "val", "test")  # the split names, also of a manifest's split column


class DataValidationError(ValueError):
    """The data set has problems; the message lists every one with its file or config key. `checked`: the manifest
    and class table of the files that could be checked, or None."""

    def __init__(self, message: str, checked: tuple | None = None):
        super().__init__(message)
        self.checked = checked


def grouped(problems: list[str], least: int = 5, named: int = 20) -> list[str]:
    """The problems, those of `least` files or more that say the same after their file name in one line each, naming
    the first file by its path and up to `named` files in all by their folder and name."""
    by_text, lines = {}, []
    for problem in problems:
        by_text.setdefault(problem.split(": ", 1)[-1], []).append(problem)
    for text, same in by_text.items():
        files = [problem.split(": ", 1)[0] for problem in same]
        names = ", ".join([files[0], *(short_name(Path(file)) for file in files[1:named])])
        lines += same if len(same) < least else [f"{len(files)} files ({names}{', ...' if len(files) > named else ''})"
                                                 f": {text}"]
    return lines


def list_files(spec: str, suffixes: tuple[str, ...], folders=is_series) -> list[Path]:
    """Files named by a folder (its direct children) or a glob pattern (`**` matches any depth), keeping those
    with a known suffix and the folders `folders` accepts (DICOM series); a series folder itself names itself."""
    if is_series(spec):
        return [Path(spec)]
    paths = [Path(p) for p in (glob.glob(os.path.join(spec, "*")) if os.path.isdir(spec)
                               else glob.glob(spec, recursive=True))]
    return sorted(p for p in paths if (p.is_file() and p.name.lower().endswith(suffixes)) or folders(p))


def is_mask_folder(path) -> bool:
    """Whether `path` is a folder that is one mask: a DICOM series of label values, or a folder of object masks."""
    return is_series(path) or is_object_folder(path)


def with_series_files(paths) -> list[Path]:
    """The paths with each DICOM series or object folder replaced by the files in it (so that a changed slice or
    object is a change)."""
    return [file for path in map(Path, paths)
            for file in (sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path])]


IMAGE_FILE_SUFFIXES = IMAGE_SUFFIXES + VOLUME_SUFFIXES + SLIDE_SUFFIXES  # 2D images, stacks, volumes, slides


def image_files(spec: str | None) -> list[Path]:
    """The image files (2D, stacks, volumes, scanner slides) a folder or glob names; none for None."""
    return list_files(spec, IMAGE_FILE_SUFFIXES) if spec else []


def read_from(spec: str) -> str:
    """For a relative path or glob, where it is read from (the working directory, which Snakemake's --directory
    sets); else ''."""
    return "" if os.path.isabs(spec) else f" (a relative path: read from {os.getcwd()})"


def subfolder_note(spec: str | None) -> str:
    """For a folder with image files in its (not hidden) subfolders, which it does not name (only its direct
    children): how many, in which subfolders, and the glob that names them all; else ''."""
    if not spec or not os.path.isdir(spec) or is_series(spec):
        return ""
    deeper = [path.relative_to(spec) for path in Path(spec).glob("*/**/*")
              if path.is_file() and path.name.lower().endswith(IMAGE_FILE_SUFFIXES)]
    folders = Counter(path.parts[0] for path in deeper if not any(part.startswith(".") for part in path.parts))
    shown = ", ".join(f"{folder} ({count})" for folder, count in folders.most_common(5))
    return (f"{sum(folders.values())} image file(s) in subfolders of {spec} are not read (a folder names its direct "
            f"children only): {shown}{', ...' if len(folders) > 5 else ''}; if they are cases too, write "
            f"'{os.path.join(spec, '**', '*')}'" if folders else "")


def buried_series(spec: str | None, key: str = "data.images") -> list[str]:
    """Problems of the subfolders of a folder `spec` that are no DICOM series but hold one deeper (a PACS export's
    `case/SE0001/*.dcm`): a folder names its direct children only, so their cases would be missing."""
    if not spec or not os.path.isdir(spec) or is_series(spec):
        return []
    problems = []
    for child in sorted(path for path in Path(spec).iterdir() if path.is_dir() and not is_series(path)):
        deeper = next((path for path in sorted(child.rglob("*")) if is_series(path)), None)
        if deeper is not None:
            problems.append(f"{child}: not a DICOM series, but it holds one deeper ({deeper}), which a folder "
                            f"does not name; write '{os.path.join(spec, '**')}' to name every series below it, or "
                            f"move each series' slices up into its case folder")
    return problems


def mask_files(spec: str | None) -> list[Path]:
    """The mask (or region-of-interest) files a folder or glob names, DICOM SEG files (*.dcm) and GeoJSON
    annotations among them, or a COCO annotation file itself; none for None."""
    if spec and is_coco(spec):
        return [Path(spec)]
    found = list_files(spec, MASK_SUFFIXES + VOLUME_SUFFIXES + (DICOM_SUFFIX,) + ANNOTATION_SUFFIXES,
                       is_mask_folder) if spec else []
    parents = {path.parent for path in found if path.is_file()}
    return [path for path in found if path.is_file() or path not in parents]  # a glob's folder of its masks: no mask


# image formats labs use that unetflow does not read
UNREAD_IMAGE_SUFFIXES = (".webp", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".czi", ".nd2", ".lif", ".vsi",
                         ".mha", ".mhd", ".nrrd", ".nhdr", ".mgz", ".pgm", ".ppm", ".pnm", ".pbm")


def unread_images(spec: str | None) -> list[Path]:
    """The files a folder or glob names in image formats unetflow does not read (WebP, HEIC, CZI, NRRD, ...)."""
    return list_files(str(spec), UNREAD_IMAGE_SUFFIXES, lambda path: False) if spec and not str(
        spec).lower().endswith((".csv", ".parquet")) else []


def unread_images_note(spec: str | None, key: str) -> str:
    """For files a folder or glob names in image formats unetflow does not read (WebP, HEIC, CZI, NRRD, ...): how
    many, a few of them and the fix; else ''."""
    found = unread_images(spec)
    names = ", ".join(path.name for path in found[:5]) + (", ..." if len(found) > 5 else "")
    return (f"{len(found)} file(s) that {key} names are in formats unetflow does not read, so left out ({names}): "
            f"convert them to PNG or TIFF (volumes to NIfTI)" if found else "")


def stems_of(paths: list[Path], case_of=lambda stem: stem) -> dict[str, list[Path]]:
    """{file stem (or the case `case_of` a stem names): files with that stem}."""
    by_stem = {}
    for path in paths:
        by_stem.setdefault(case_of(case_stem(path)), []).append(path)
    return by_stem


def name_likeness(stem: str, other: str) -> float:
    """1 when `other` is `stem` with a prefix or suffix set off by a separator (c1 -> c1_annotation, not c10), else
    difflib's similarity ratio."""
    affixed = (other.startswith(stem) and not other[len(stem):][:1].isalnum()) or \
        (other.endswith(stem) and not other[:-len(stem)][-1:].isalnum())
    return 1.0 if affixed else difflib.SequenceMatcher(None, stem, other).ratio()


def name_hint(stem: str, masks: list[Path], prefix: str, suffixes, unpaired: list[Path]) -> str:
    """For an image without a mask: the masks whose names differ from the ones looked for in letter case only, else
    the unpaired mask of the closest name (`name_likeness` at least CLOSE_NAME, among at most CLOSE_NAME_MASKS)."""
    exact = {prefix + stem + suffix for suffix in suffixes}
    wanted = {name.lower() for name in exact}
    close = [str(mask) for mask in masks if case_stem(mask).lower() in wanted and case_stem(mask) not in exact]
    if close:
        return f"; {', '.join(close)} differ(s) in letter case only: rename to match"
    scored = [(name_likeness(stem, case_stem(mask)), str(mask)) for mask in unpaired[:CLOSE_NAME_MASKS]]
    likeness, nearest = max(scored, default=(0.0, None))
    return f"; the unpaired mask {nearest} has a close name (data.manifest pairs any names)" if \
        likeness >= CLOSE_NAME else ""


def pair_files(images: list[Path], masks: list[Path], mask_suffix: str, mask_prefix: str = "",
               unread: list[Path] = ()) -> tuple[list[dict], list[str]]:
    """Match images to masks by stem (an nnU-Net channel file by its case, images of one stem by their sites'
    folders), or by folder in the case-folder layout (`unetflow.data.layouts`); return source pairs {stem, image,
    mask} and the pairing problems (a mask or image whose partner is one of the `unread` files, in a format not read,
    is said to be so). Images and masks may share a folder: a file that is the mask of another image is not an image
    itself."""
    if (by_folder := case_folder_pairs(images, masks)) is not None:
        return by_folder
    suffixes = AUTO_MASK_SUFFIXES if mask_suffix == "auto" else (mask_suffix,)
    masks_by_stem, pairs, problems, used = stems_of(masks), [], [], set()
    listed = set(images)
    case_of = partial(image_case, has_mask=lambda stem: any(  # an image in a shared folder is no mask of itself
        case_stem(mask) != stem or mask not in listed for mask in match_by_stem(stem, masks_by_stem, mask_prefix,
                                                                                suffixes)))
    candidates = {case: [m for m in match_by_stem(case, masks_by_stem, mask_prefix, suffixes) if m not in files]
                  for case, files in stems_of(images, case_of).items()}
    masks_of_images = {mask for found in candidates.values() for mask in found}
    unpaired = [mask for mask in masks if mask not in masks_of_images and mask not in listed]
    hint = partial(name_hint, masks=masks, prefix=mask_prefix, suffixes=suffixes, unpaired=unpaired)
    unread_by_stem = by_stem(unread)
    looked_for = f"{repr(mask_prefix) + ' + ' if mask_prefix else ''}its name + one of {list(suffixes)}"
    for stem, files in stems_of([image for image in images if image not in masks_of_images], case_of).items():
        found = candidates[stem]
        by_site = site_pairs(stem, files, found) if len(files) > 1 else None
        used.update(found if by_site is None else [pair["mask"] for pair in by_site[0]])
        if by_site is not None:
            pairs += by_site[0]
            problems += by_site[1]
        elif len(files) > 1:
            problems.append(duplicate_problem(stem, files))
        elif not found:
            problems.append(unread_partner_problem(files[0], stem, unread_by_stem, mask_prefix, suffixes) or
                            UnpairedImage(f"{files[0]}: no mask found (looked for {looked_for} in data.masks)"
                                          f"{hint(stem)}; add its mask, set "
                                          f"data.mask_suffix/mask_prefix, list the pairs in data.manifest (a CSV "
                                          f"of columns image, mask) where names differ otherwise, or "
                                          f"data.unpaired: skip to leave it out", files[0]))
        elif len(found) > 1:
            problems.append(f"{files[0]}: several masks match: {', '.join(map(str, found))}; keep one")
        else:
            pairs.append(dict(stem=stem, image=files[0], mask=found[0]))
    problems += [unpaired_mask(m, next(iter(match_mask(m, unread_by_stem, mask_prefix, suffixes)), None))
                 for m in masks if m not in used and m not in listed]
    return pairs, problems


def read_manifest_file(path: str, required=("image", "mask"), key: str = "data.manifest") -> list[dict]:
    """The rows of a CSV or Parquet manifest (the config key `key`) with the `required` columns: image, mask and
    optionally group, split for a data set."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{key}: no such file '{path}'")
    if path.suffix.lower() == ".parquet":
        import pandas  # only here: the Snakefile imports this module, and Parquet manifests are rare

        rows = pandas.read_parquet(path).to_dict("records")
    else:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    columns = list(rows[0]) if rows else []
    missing = set(required) - set(columns)
    if missing:
        raise DataValidationError(f"{key} '{path}': missing column(s) {sorted(missing)}; it needs "
                                  f"{', '.join(required)} (found {columns})")
    return rows


def given(value) -> bool:
    """Whether a manifest cell holds a value (not empty, None or NaN)."""
    return value is not None and value == value and str(value) != ""


MANIFEST_COLUMNS = ("image", "mask", "group", "split")  # what a data.manifest's columns mean; others are kept


def pairs_from_manifest(path: str) -> tuple[list[dict], list[str]]:
    """Source pairs listed in a manifest file (paths relative to its folder) and their problems; a pair's `columns`
    are the row's other columns (a patient, a site, to split by), as text."""
    rows, folder = read_manifest_file(path), Path(path).parent
    pairs, problems = [], []
    for number, row in enumerate(rows, start=2):
        image, mask = folder / str(row["image"]), folder / str(row["mask"])
        try:
            pair = dict(stem=case_stem(image), image=image, mask=mask)
        except ImageReadError as error:
            problems.append(f"data.manifest line {number}: {error}")
            continue
        if given(row.get("group")):
            pair["group"] = str(row["group"])
        pair["columns"] = {key: str(value) if given(value) else None for key, value in row.items()
                           if key not in MANIFEST_COLUMNS}
        if "split" in row:
            pair["split"] = row["split"]
            if row["split"] not in SPLITS:
                problems.append(f"data.manifest line {number} ({image.name}): split '{row['split']}' is not one of "
                                f"{list(SPLITS)}")
        pairs.append(pair)
    pairs = with_site_names(pairs)
    # one mask listed for two images is refused here; two images of one stem in a folder by duplicate_problems
    images_of = {}
    for pair in pairs:
        images_of.setdefault(pair["mask"], []).append(pair["image"].name)
    problems += [f"data.manifest: mask {mask} is listed for {len(names)} images ({', '.join(names[:5])}); each image "
                 f"needs its own mask" for mask, names in images_of.items() if len(names) > 1]
    return pairs, problems


def dataset_json(masks: str | None) -> Path | None:
    """The dataset.json of nnU-Net's or the Decathlon's layout, in the folder above the masks' folder
    (`Dataset/labelsTr` -> `Dataset/dataset.json`), or None."""
    if not masks:
        return None
    path = input_root(masks).parent / "dataset.json"
    return path if path.is_file() else None


def data_files(data: dict) -> list[str]:
    """Every file of the `data` config section that ingest reads (so that a new or changed file reruns it): the
    manifest and the existing files it lists, or the images, masks (with a dataset.json) and regions of interest."""
    files = []
    if data.get("manifest"):
        folder = Path(data["manifest"]).parent
        files.append(Path(data["manifest"]))
        try:
            rows = read_manifest_file(data["manifest"])
        except DataValidationError:
            rows = []  # ingest reports it, with every other problem
        listed = [folder / str(row.get(key)) for row in rows for key in ("image", "mask")]
        files += [path for path in listed if path.is_file() or is_mask_folder(path)]
    else:
        files += image_files(data.get("images")) + mask_files(data.get("masks"))
        files += [path for path in [dataset_json(data.get("masks"))] if path is not None]
    files += image_files(data.get("rois"))
    return sorted({str(path) for path in with_series_files(files)})


def input_root(spec: str) -> Path:
    """The folder the images of an input specification are laid out below: the folder itself, a manifest's or a
    single DICOM series' folder, or the part of a glob before its first wildcard."""
    if os.path.isdir(spec) and not is_series(spec):
        return Path(spec)
    parts = Path(spec).parts
    wild = next((index for index, part in enumerate(parts) if glob.has_magic(part)), None)
    if wild is None:  # a manifest, a single file or series
        return Path(spec).parent
    return Path(*parts[:wild]) if wild else Path(".")
