"""Ingest and validate a data set: pair images with masks, check every pair, report every problem at once.

The manifest has one row per source (a pair of files; id = the image's file stem): a 2D file, a multi-page TIFF stack
or a NIfTI volume, read in array order (`unetflow.io.sources`). Which files pair up is `unetflow.data.pairing`'s job.
Every image and mask is read in full, in a thread pool.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from unetflow.config import declared_class_problems, region_problems
from unetflow.data.annotated import rasterised_pairs
from unetflow.data.channels import channel_problems, greyed
from unetflow.data.coco_pairs import coco_classes, coco_pairs
from unetflow.data.dataset_json import dataset_json_classes
from unetflow.data.mask_checks import palette_colours, palette_problems, shown_value_problems, undeclared_value_problems
from unetflow.data.pairing import (
    DataValidationError,
    buried_series,
    grouped,
    image_files,
    mask_files,
    pair_files,
    pairs_from_manifest,
    read_from,
    subfolder_note,
    unread_images,
)
from unetflow.data.rois import attach_rois
from unetflow.data.soft_edges import soft_edge_problem
from unetflow.data.unpaired import kept_problems
from unetflow.instances.targets import instance_classes, instance_data_problems, instance_source_fields
from unetflow.io.formats import IMAGE_SUFFIXES, VOLUME_SUFFIXES, ImageReadError, is_coco, is_lossy, is_volume
from unetflow.io.images import (
    exif_orientation,
    image_info,
    is_lossy_mask,
    pixel_problem,
    size_mismatch_fix,
    truncation_problem,
)
from unetflow.io.labels import IGNORE_INDEX, LabelCoding, mask_values, trained_classes
from unetflow.io.nifti import grid_check, spacing_mismatch
from unetflow.io.sources import (
    constant_channels,
    is_grey_colour,
    read_source_image,
    read_source_mask,
    snapped,
    source_kind,
    units,
    volume_slice_axis,
)

log = logging.getLogger("unetflow.data.ingest")


@dataclass
class DataSpec:
    """The `data` config section (see workflow/schemas/config.schema.yaml for the meaning of each key)."""
    images: str | None = None
    masks: str | None = None
    mask_suffix: str = "auto"
    mask_prefix: str = ""
    manifest: str | None = None
    rois: str | None = None
    classes: dict | None = None
    colors: dict | None = None
    channels: int | None = None
    lossy_masks: str = "refuse"
    ignore_label: int | None = None
    num_classes: int | None = None
    slice_axis: int = 2
    instances: bool = False
    instance_target: str = "weight_map"
    foreground: str = "values"
    regions: dict | None = None
    slide_pixel_size: float | None = None
    unannotated: str = "ignore"
    unpaired: str = "refuse"

    @classmethod
    def from_config(cls, data: dict) -> "DataSpec":
        """The spec from a config section, unknown keys ignored (the schema refuses them)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# ------------------------------------------------------------------------------------------ one source pair


def mask_problem(pair: dict, kind: str, data: DataSpec) -> str | None:
    """A problem with the kind of the mask file before it is read, or None."""
    mask = pair["mask"]
    kind_of_mask = "JPEG masks are" if is_lossy(mask) else "the TIFF mask is compressed with JPEG (or WebP), which is"
    declared = data.classes or data.colors or data.foreground == "nonzero"
    if is_lossy_mask(mask) and (data.lossy_masks != "snap" or data.instances):
        fix = ("; object ids cannot be snapped" if data.instances else
               ", or set data.lossy_masks: snap to snap every pixel to the nearest declared class" + (
                   "" if declared else " (declared in data.classes, e.g. {background: 0, foreground: 255})"))
        return (f"{mask}: {kind_of_mask} lossy (compression changes label values); export the mask as PNG or a "
                f"lossless TIFF{fix}")
    if data.lossy_masks == "snap" and not declared:
        return (f"{mask}: data.lossy_masks: snap needs declared classes to snap to; set data.classes or data.colors "
                f"(or data.foreground: nonzero)")
    if (kind == "volume") != is_volume(mask):
        return (f"{mask}: the image {pair['image'].name} is a {'volume' if kind == 'volume' else '2D file'} but its "
                f"mask is not; pair volumes (NIfTI, DICOM series) with NIfTI volumes, DICOM SEG files or series")
    if kind == "stack" and Path(mask).suffix.lower() not in (".tif", ".tiff"):
        return (f"{mask}: the image {pair['image'].name} is read as a stack of pages (a multi-page TIFF whose metadata "
                f"name no channel axis), so its mask must be a TIFF stack; if the pages are channels, save the image "
                f"with its axes (ImageJ or OME metadata, e.g. 'CYX') or as RGB")
    return None


def read_pair(pair: dict, data: DataSpec) -> tuple[dict, np.ndarray, np.ndarray]:
    """The source row (id, files, kind, slice axis) of a pair, its image (C, Z, Y, X) and its mask (Z, Y, X[, 3]),
    each decoded in full as preprocessing will read them (corrupt pixel data, also in complete files, and NaN/Inf in
    volumes are found here); ImageReadError for a file that cannot be read."""
    image, mask = pair["image"], pair["mask"]
    kind = source_kind(image, image_info(image))
    problem = mask_problem(pair, kind, data) or (None if kind == "volume" else truncation_problem(image))
    if problem:
        raise ImageReadError(problem)
    axis = volume_slice_axis(image, data.slice_axis) if kind == "volume" else 0
    row = dict(id=pair["stem"], image_path=str(image), mask_path=str(mask), kind=kind, slice_axis=axis)
    return row, read_source_image(row), read_source_mask(row, bool(data.colors), data.instances)


def value_fields(masks: np.ndarray, coding: LabelCoding, mask) -> dict:
    """The class values found in a source's mask (Z, Y, X[, 3]), their voxel shares and the lossy-mask pixels snapped
    to the nearest class; ImageReadError for values the coding cannot map."""
    values, changed = zip(*(mask_values(plane, coding, snapped(coding, mask), mask) for plane in masks))
    found, counts = np.unique(np.stack(values), return_counts=True)
    return dict(label_values=found.tolist(), label_fractions=(counts / counts.sum()).tolist(),
                snapped_pixels=int(sum(changed)))


def inspect_pair(pair: dict, data: DataSpec, coding: LabelCoding) -> tuple[dict | None, list[str]]:
    """Check one source pair; return its manifest row (or None) and its problems."""
    try:
        row, pixels, masks = read_pair(pair, data)
    except ImageReadError as error:
        return None, [str(error)]
    image, mask = pair["image"], pair["mask"]
    channels, shape = pixels.shape[0], pixels.shape[1:]
    if masks.shape[:3] != shape:
        return None, [f"{image}: image is {shape[0]} slice(s) of {shape[1]}x{shape[2]} but its mask {mask} is "
                      f"{masks.shape[0]} slice(s) of {masks.shape[1]}x{masks.shape[2]} (height x width); "
                      f"{size_mismatch_fix(image, shape[1:], masks.shape[1:3])}"]
    grid, reoriented = grid_check(image, mask, "mask") if row["kind"] == "volume" else (None, False)
    if problem := pixel_problem(image, pixels) or grid:
        return None, [problem]
    problems = roi_problems(pair, shape[1:], shape[0])
    try:
        fields, found = instance_source_fields(masks, mask) if data.instances else (value_fields(masks, coding, mask),
                                                                                    [])
    except ImageReadError as error:
        return None, [str(error)]
    problems += found
    row.update(group=pair.get("group", pair["stem"]), slices=int(shape[0]), height=int(shape[1]),
               width=int(shape[2]), channels=int(channels), dtype=str(pixels.dtype),
               input_channels=int(data.channels or channels), constant=bool(pixels.min() == pixels.max()), **fields,
               grey_colour=is_grey_colour(pixels), read_as_grey=False,
               exif_orientation=exif_orientation(image) if row["kind"] == "image" else 1,
               constant_channels=constant_channels(pixels),
               reoriented=reoriented, spacing_mismatch=row["kind"] == "volume" and spacing_mismatch(image),
               roi_path=str(pair["roi"]) if "roi" in pair else None, **pair.get("origin", {}),
               palette_colours=None if data.instances or data.colors or row["kind"] != "image" else
               palette_colours(mask, np.unique(masks).tolist()),  # the stored indices, before any snapping
               **({"split": pair["split"]} if "split" in pair else {}))
    row.update({key: value for key, value in pair.get("columns", {}).items() if key not in row})
    return row, problems


def roi_problems(pair: dict, shape: tuple[int, int], count: int) -> list[str]:
    """A problem when the pair's region-of-interest file does not have the image's geometry."""
    if "roi" not in pair:
        return []
    if is_volume(pair["image"]) or is_volume(pair["roi"]):
        if is_volume(pair["image"]) != is_volume(pair["roi"]):
            return [f"{pair['roi']}: pair NIfTI volumes with NIfTI regions of interest, 2D files with 2D files"]
        problem = grid_check(pair["image"], pair["roi"], "region of interest")[0]
        return [problem] if problem else []
    try:
        info = image_info(pair["roi"])
    except ImageReadError as error:
        return [str(error)]
    roi_shape = (info["height"], info["width"], info["depth"])
    if roi_shape != (*shape, count):
        return [f"{pair['roi']}: region of interest is {roi_shape[0]}x{roi_shape[1]} ({roi_shape[2]} slice(s)) "
                f"but its image {pair['image']} is {shape[0]}x{shape[1]} ({count}); export matching files"]
    return []


# ------------------------------------------------------------------------------------------ data-set checks


def declared_classes(data: DataSpec) -> tuple[pd.DataFrame | None, list[str]]:
    """The class table declared in the config (None when the values are to be found in the masks) and problems."""
    if data.foreground == "nonzero":
        return nonzero_classes(data)
    problems = declared_class_problems(asdict(data))
    if data.colors:
        names = list(data.colors)
        table = pd.DataFrame({"index": range(len(names)), "name": names, "value": range(len(names)),
                              "color": [list(map(int, data.colors[n])) for n in names]})
    elif data.classes:
        table = pd.DataFrame({"index": range(len(data.classes)), "name": list(data.classes),
                              "value": [int(v) for v in data.classes.values()], "color": None})
    else:
        return None, problems
    return with_ignore_row(table, data.ignore_label).assign(snap=data.lossy_masks == "snap"), problems


def nonzero_classes(data: DataSpec) -> tuple[pd.DataFrame, list[str]]:
    """The class table of data.foreground: nonzero: background (0) and foreground (every other value, written as
    255 in predictions, or as the second value of data.classes, which may name the two), and its problems."""
    problems, names, values = [], ["background", "foreground"], [0, 255]
    if data.colors:
        problems.append("data.foreground: nonzero applies to masks of values, not colours; leave data.colors unset")
    if data.classes and (len(data.classes) != 2 or list(data.classes.values())[0] != 0):
        problems.append(f"data.foreground: nonzero trains two classes, background (0) and foreground (every other "
                        f"value); data.classes may only name them and the value predictions are written with, e.g. "
                        f"{{background: 0, nucleus: 255}}, not {data.classes}")
    elif data.classes:
        names, values = list(data.classes), [int(v) for v in data.classes.values()]
    if data.ignore_label in values:
        problems.append(f"data.ignore_label {data.ignore_label} is a class value of data.foreground: nonzero; use "
                        f"another value")
    table = pd.DataFrame({"index": [0, 1], "name": names, "value": values, "color": None, "nonzero": [False, True]})
    return with_ignore_row(table, data.ignore_label).assign(snap=data.lossy_masks == "snap"), problems


def with_ignore_row(table: pd.DataFrame, ignore_label: int | None) -> pd.DataFrame:
    """The class table with its `ignore` and `nonzero` flag columns, plus a row for the ignored value when there
    is one."""
    table = table.assign(ignore=False, nonzero=table["nonzero"] if "nonzero" in table else False)
    if ignore_label is None:
        return table
    row = pd.DataFrame({"index": [255], "name": ["ignore"], "value": [int(ignore_label)], "color": [None],
                        "ignore": [True], "nonzero": [False]})
    return pd.concat([table, row], ignore_index=True)


def found_classes(rows: list[dict], ignore_label: int | None) -> pd.DataFrame:
    """Class table of the values found in the masks (two values become background/foreground)."""
    values = sorted({v for row in rows for v in row["label_values"]} - {ignore_label})
    names = ["background", "foreground"] if len(values) == 2 else [f"class_{v}" for v in values]
    table = pd.DataFrame({"index": range(len(values)), "name": names, "value": values, "color": None})
    return with_ignore_row(table, ignore_label)


def other_encoding(row: dict, values: list[int], allowed: set[int]) -> str:
    """For a mask holding undeclared values and no declared foreground value: the fix of a mask saved with other
    values (another annotator or tool), mapping them in order where they are as many as the declared; else ''."""
    found = sorted(set(row["label_values"]) - allowed)
    if set(row["label_values"]) & set(values[1:]):
        return ""
    mapping = ", ".join(f"{a} -> {b}" for a, b in zip(found, values[1:])) if len(found) == len(values) - 1 else ""
    order = f" (in the same order: {mapping}; check which is which)" if mapping else ""
    return (f"; it holds none of the declared foreground values: saved with other values (another annotator or "
            f"tool)? Save it with the declared ones{order}, or declare its values in data.classes")


def class_problems(classes: pd.DataFrame, rows: list[dict], data: DataSpec) -> list[str]:
    """Masks holding undeclared values, declared classes found nowhere, a wrong class count, no foreground."""
    trained = classes[~classes["ignore"]]
    values, allowed = trained["value"].tolist(), set(classes["value"])
    table = dict(zip(trained["name"], values))
    soft_edges = soft_edge_problem(rows, values) if data.lossy_masks != "snap" else None
    present = {v for row in rows for v in row["label_values"]}
    absent = [value for value in values if value not in present]
    fix = (f", while the declared value(s) {absent} occur in no mask: declare the values the masks store" if absent
           else "; add them to data.classes (or set data.ignore_label)")
    problems = [soft_edges] if soft_edges else [
        f"{row['mask_path']}: mask values {sorted(set(row['label_values']) - allowed)} are not among the declared "
        f"classes {table}{(not absent and other_encoding(row, values, allowed)) or fix}" for row in rows
        if set(row["label_values"]) - allowed]
    if len(values) < 2:
        return problems + [f"all masks hold the single class value {values}: at least two classes are needed; "
                           f"check data.masks"]
    if len(values) > IGNORE_INDEX:
        problems.append(f"the masks define {len(values)} classes; at most {IGNORE_INDEX} can be trained; declare "
                        f"the classes in data.classes or set data.foreground: nonzero")
    if data.num_classes is not None and data.num_classes != len(values):
        problems.append(f"data.num_classes is {data.num_classes} but the masks define {len(values)} classes "
                        f"{table}; fix data.num_classes or data.classes")
    if not present & set(values[1:]):
        return problems + [f"no mask of the {len(rows)} cases holds any foreground (every pixel is "
                           f"'{trained['name'].iloc[0]}' = {values[0]}); check data.masks and data.classes"]
    problems += [f"class '{name}' (value {value}) is declared in data.classes/colors but occurs in no mask; "
                 f"remove it or add cases that have it" for name, value in table.items() if value not in present]
    return problems


def duplicate_problems(rows: list[dict]) -> list[str]:
    """Names of what is scored as one (`unetflow.io.sources.units`: a 2D file, a stack page `<stem>_s<i>`, a
    volume) that occur more than once, e.g. a page of stack `x` beside a file `x_s0`."""
    files = {}
    for row in rows:
        for name, _ in units(row):
            files.setdefault(name, set()).add(row["image_path"])
    return [f"duplicate case id '{name}' ({', '.join(sorted(paths))}); rename one of the files"
            for name, paths in sorted(files.items()) if len(paths) > 1]


# ----------------------------------------------------------------------------------------------- entry points


def source_pairs(data: DataSpec, out_dir=None) -> tuple[list[dict], list[str]]:
    """The image/mask source pairs of the data set and the pairing problems (images without a mask left out instead
    with data.unpaired: skip); DataValidationError when none. The masks of a COCO file are drawn into `out_dir`
    (`unetflow.data.coco_pairs`)."""
    if data.manifest:
        pairs, problems = pairs_from_manifest(data.manifest)
    else:
        if not data.images or not data.masks:
            raise DataValidationError("data.images and data.masks (or data.manifest) must be set")
        images, problems = image_files(data.images), buried_series(data.images)
        if not images and not problems:
            raise DataValidationError(f"no image files matched data.images = '{data.images}'{read_from(data.images)} "
                                      f"(suffixes {IMAGE_SUFFIXES + VOLUME_SUFFIXES}, or DICOM series folders); "
                                      f"{subfolder_note(data.images) or 'check the path or glob'}")
        pairs, paired = (coco_pairs(images, data.masks, data.instances, out_dir) if is_coco(data.masks) else
                         pair_files(images, mask_files(data.masks), data.mask_suffix, data.mask_prefix,
                                    list(dict.fromkeys(unread_images(data.images) + unread_images(data.masks)))))
        problems += paired
    if data.rois:
        problems += attach_rois(pairs, data.rois)
    return pairs, kept_problems(problems, data.unpaired)


def instance_settings_problems(data: DataSpec) -> list[str]:
    """Settings the instance mode (data.instances: true) cannot honour: declared classes, data.foreground: nonzero."""
    problems = instance_data_problems([], bool(data.classes or data.colors))
    if data.foreground == "nonzero":
        problems.append("data.instances: true trains objects, data.foreground: nonzero one foreground class; set "
                        "only one of them")
    return problems


def region_settings_problems(data: DataSpec, classes: pd.DataFrame) -> list[str]:
    """data.regions the data set cannot train (`unetflow.config.region_problems`), judged against its classes."""
    trained = trained_classes(classes)
    values = trained["value"].astype(int).tolist()
    return region_problems({**asdict(data), "classes": dict(zip(trained["name"], values)) or None})


def check_data_set(data: DataSpec, threads: int = 1, annotated_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate the data set; return (manifest, class table) or raise DataValidationError listing every problem.
    GeoJSON masks are rasterised and COCO masks drawn into `annotated_dir` first (`unetflow.data.annotated`,
    `unetflow.data.coco_pairs`); a COCO file's categories (or a dataset.json's labels, `unetflow.data.dataset_json`)
    are the classes unless data.classes is set."""
    if is_coco(data.masks or "") and not (data.instances or data.classes):
        data = replace(data, classes=coco_classes(data.masks))
    elif not (data.instances or data.classes or data.colors or data.regions or data.foreground == "nonzero"):
        data = replace(data, classes=dataset_json_classes(data.masks))
    pairs, problems = source_pairs(data, annotated_dir)
    data, pairs, found = rasterised_pairs(pairs, data, annotated_dir, threads)
    problems += found
    declared, config_problems = declared_classes(data)
    if data.instances:
        config_problems, declared = instance_settings_problems(data), instance_classes(data.instance_target)
    problems = config_problems + problems
    coding = LabelCoding.of(declared) if declared is not None else LabelCoding(None, [], None)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda pair: inspect_pair(pair, data, coding), pairs))
    rows = [row for row, _ in results if row is not None]
    rows = rows if data.channels else greyed(rows)
    problems += [p for _, pair_problems in results for p in pair_problems] + duplicate_problems(rows)
    classes = declared if declared is not None else found_classes(rows, data.ignore_label)
    problems += region_settings_problems(data, classes)
    if rows and data.instances:
        problems += instance_data_problems(rows, False) + channel_problems(rows, data.channels)
    elif rows:
        shown = shown_value_problems(rows)
        unshown = [row for row in rows if row["mask_path"] not in shown]
        meaning = undeclared_value_problems(unshown, found_classes(unshown, data.ignore_label)) if \
            declared is None and unshown else []
        problems += (palette_problems(rows) + list(shown.values()) + (meaning or class_problems(classes, rows, data))
                     + channel_problems(rows, data.channels))
    if problems:
        lines = grouped(problems)
        shared = "" if len(lines) == len(problems) else " (the files of one problem on one line)"
        raise DataValidationError(f"{len(problems)} problem(s) in the data set{shared}:\n  - " + "\n  - ".join(lines),
                                  (pd.DataFrame(rows), classes) if rows else None)
    manifest = pd.DataFrame(rows)
    if data.instances:
        log.info("%d objects, %d touching pairs of objects in %d masks%s", manifest["objects"].sum(),
                 manifest["touching_pairs"].sum(), len(manifest),
                 " (of stacks and volumes, counted per slice: the mode finds objects slice by slice)"
                 if (manifest["slices"] > 1).any() else "")
    return manifest, classes
