"""Inference on new, unlabelled images with a model package: check every image first, then segment them with the
`Predictor` (unetflow.infer.predictor), writing masks laid out as the inputs are (each image's path below the folder
of the input specification, its suffix that of the mask format) and a summary per image and class. A package of the
instance mode writes instance masks and a table of the objects (`objects.parquet` beside the masks).

The same functions serve the workflow's `infer` rules, the Python API and the command line:

    python -m unetflow.infer --model results/unet/package/unet.pt --input new_images/ --output segmented/

Whole-slide images among the inputs (pyramidal TIFF, SVS, NDPI, MRXS) are segmented region by region at the level of
the pixel size `--slide-pixel-size` (µm, that of the training images; default: the one a package trained on slides
records) into <name>.ome.tif label pyramids (named as masks are) with GeoJSON polygons beside them, one row each in
slides.parquet (`unetflow.infer.slide`); the workflow splits each slide over `infer.slide_jobs` jobs.
"""

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch

from unetflow.data.infer_images import listed_images, output_name
from unetflow.data.layouts import without_channel_suffix
from unetflow.data.pairing import input_root, subfolder_note
from unetflow.infer.package import Package, volume_depth
from unetflow.infer.predictor import OBJECTS_FILE, Predictor, image_problems
from unetflow.infer.rois import roi_note, with_rois
from unetflow.infer.slide import REGION, SLIDES_FILE, predict_slides, slide_problems, slide_row
from unetflow.infer.slide_objects import OBJECT_SIZE
from unetflow.infer.slide_tissue import TISSUE_RULES
from unetflow.infer.summary import small_objects_note
from unetflow.io.calibration import PIXEL_SIZE_TOLERANCE, stated_pixel_size
from unetflow.io.formats import ImageReadError, case_stem
from unetflow.io.images import exif_orientation, image_info
from unetflow.io.nifti import axis_codes
from unetflow.io.slide_backends import pixel_size_of
from unetflow.io.slides import ZOOM_TOLERANCE, is_slide
from unetflow.io.sources import constant_channels, read_source_image, source_kind, units, volume_slice_axis

log = logging.getLogger("unetflow.infer.infer")
SMALL_IMAGE_SHARE = 0.5  # 2D images whose shorter side is under this share of the training images' shortest are named


class InferInputError(ValueError):
    """Images given for inference have problems; the message lists every one with its file."""


# ------------------------------------------------------------------------------------------------- checking


def inspect_image(path: Path, name: str, package: Package) -> tuple[dict | None, list[str]]:
    """One image source decoded in full and checked against the model: its row (id = output `name`, kind, slices,
    geometry) and its problems."""
    try:
        kind = source_kind(path, image_info(path))
        axis = volume_slice_axis(path, package.slice_axis) if kind == "volume" else 0
        image = read_source_image(dict(kind=kind, image_path=str(path), slice_axis=axis))
        scale = scale_problem(path, package)
    except ImageReadError as error:
        return None, [str(error)]
    problems = [f"{path}: {problem}" for problem in image_problems(image, package) + [scale] if problem]
    if kind != "volume" and package.has_3d_model:
        problems.append(f"{path}: a 2D {'TIFF stack' if kind == 'stack' else 'image'}, but {package.path} holds 3D "
                        f"models, which segment NIfTI volumes only; segment it with a package of 2D models")
    row = dict(id=name, image_path=str(path), kind=kind, slices=int(image.shape[1]), slice_axis=axis,
               height=int(image.shape[2]), width=int(image.shape[3]), channels=int(image.shape[0]),
               dtype=str(image.dtype), exif_orientation=exif_orientation(path) if kind == "image" else 1,
               constant=bool(image.min() == image.max()), constant_channels=constant_channels(image),
               pixel_size_ratio=pixel_size_ratio(path, package),
               axis_codes=axis_codes(path) if kind == "volume" else "")
    return dict(row, size_ratio=size_ratio(image, row, package)), problems


def size_ratio(image: np.ndarray, row: dict, package: Package) -> float:
    """A 2D image's shorter side over the shortest side of the package's training images, a volume's depth over the
    shallowest training volume's (`volume_depth`; for 3D models); NaN for stacks and packages that do not record
    their training images' sizes."""
    data = package.training_data
    if row["kind"] == "volume" and data.get("volume_depth_min") and package.has_3d_model:
        return volume_depth(row) / data["volume_depth_min"]
    if row["kind"] != "image" or "height_range" not in data or "image" not in data.get("kinds", []):
        return float("nan")
    return min(image.shape[2:]) / min(data["height_range"][0], data["width_range"][0])


def pixel_size_ratio(path: Path, package: Package) -> float:
    """The pixel size a TIFF states over the one the package's training TIFFs stated (their median): of the width
    and the height (anisotropic pixels, as OCT's), the one further from 1; NaN where either is unknown."""
    ratios = [stated / trained for axis, key in enumerate(("tiff_pixel_size", "tiff_pixel_height"))
              if (trained := package.training_data.get(key)) and (stated := stated_pixel_size(path, axis))]
    return max(ratios, key=lambda ratio: abs(np.log(ratio))) if ratios else float("nan")


def scale_problem(path: Path, package: Package) -> str | None:
    """For a package trained on slides: a plain TIFF (one level, segmented at its own pixels) whose pixel size is not
    within ZOOM_TOLERANCE of the one the model's training slides were read at, or None."""
    wanted = package.slide_pixel_size
    if wanted is None or Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    with tifffile.TiffFile(path) as tif:
        size = pixel_size_of(tif)
    if size is None or abs(size / wanted - 1) <= ZOOM_TOLERANCE:
        return None
    return (f"{size:.4g} µm per pixel (its metadata), but the model was trained on slides at {wanted:.4g} µm per "
            f"pixel, and an image of one level is segmented at its own pixels; save it as a pyramid (a slide: read at "
            f"the model's pixel size) or resize it")


def check_notes(table: pd.DataFrame) -> list[str]:
    """Lines on images that are segmented but may not be what the user meant (each naming a few): those with an EXIF
    orientation (viewers show them turned or mirrored; segmented, and their masks written, as stored), constant
    ones (a single value: blank or failed exports, whose masks mean nothing), those with a constant channel, TIFFs of
    another pixel size than the training images' and 2D images much smaller than any training image."""
    notes = []
    turned = table[table["exif_orientation"].fillna(1) != 1] if "exif_orientation" in table else table.iloc[:0]
    if len(turned):
        notes.append(f"{named(turned, lambda row: f'{Path(row.image_path).name}: {row.exif_orientation:.0f}')} "
                     f"carry an EXIF orientation tag: viewers show them turned or mirrored, but they are segmented as "
                     f"stored and their masks written so; apply the tag first (PIL.ImageOps.exif_transpose) to get "
                     f"masks in the shown orientation")
    constant = table[table["constant"].fillna(False).astype(bool)] if "constant" in table else table.iloc[:0]
    if len(constant):
        notes.append(f"{named(constant, lambda row: Path(row.image_path).name)} hold a single value (blank, or a "
                     f"failed export): segmented, but their masks mean nothing")
    return notes + channel_notes(table) + pixel_size_notes(table) + small_image_notes(table)


def input_notes(table: pd.DataFrame, package: Package, slide_pixel_size: float | None, rois: str | None) -> list[str]:
    """Every line on the checked images to segment with `package` (`check_notes`, a slide pixel size given for no
    slide, ROIs missing for a model trained with them, volumes oriented unlike its training volumes)."""
    return [note for note in [*check_notes(table), *slide_pixel_size_note(table, slide_pixel_size),
                              roi_note(package, rois), orientation_note(table, package)] if note]


def slide_pixel_size_note(table: pd.DataFrame, slide_pixel_size: float | None) -> list[str]:
    """The line on a pixel size given for slides (infer.slide_pixel_size) when some images are no slides (one-level
    files, segmented at their own pixels); or none."""
    plain = table[table["kind"] != "slide"] if slide_pixel_size else table.iloc[:0]
    return [f"{named(plain, lambda row: Path(row.image_path).name)} are no whole-slide images (pyramids) and are "
            f"segmented at their own pixels: infer.slide_pixel_size ({slide_pixel_size:g} µm) applies to slides only; "
            f"resize them, or save them as pyramids"] if len(plain) else []


def small_image_notes(table: pd.DataFrame) -> list[str]:
    """The lines on 2D images whose shorter side is under SMALL_IMAGE_SHARE of the shortest training image side, and
    on volumes under SMALL_IMAGE_SHARE of the shallowest training volume's depth; or none."""
    if "size_ratio" not in table:  # slides only
        return []
    small = table[(table["size_ratio"] < SMALL_IMAGE_SHARE) & (table["kind"] == "image")]
    shown = named(small, lambda row: f"{Path(row.image_path).name}: {row.height}x{row.width}")
    thin = table[(table["size_ratio"] < SMALL_IMAGE_SHARE) & (table["kind"] == "volume")]
    return [f"{shown} are under {SMALL_IMAGE_SHARE:g} times the shortest side of the model's training images: a crop "
            f"is segmented as it should be, but a picture saved smaller shows its objects smaller than the model "
            f"learned them: give such images at the training images' scale"] * bool(len(small)) + [
        f"{named(thin, lambda row: f'{Path(row.image_path).name}: {row.size_ratio:.2f} times')} reach under "
        f"{SMALL_IMAGE_SHARE:g} times as deep along their slice axis as the shallowest training volume: a 3D model "
        f"sees them padded, with less context than it learned from; check them (a slab, or another slice axis?)"] * \
        bool(len(thin))


def pixel_size_notes(table: pd.DataFrame) -> list[str]:
    """The line on TIFFs that state a pixel size PIXEL_SIZE_TOLERANCE or more off the training images'; or none."""
    if "pixel_size_ratio" not in table:  # slides only
        return []
    off = table[(table["pixel_size_ratio"] - 1).abs() >= PIXEL_SIZE_TOLERANCE]
    shown = named(off, lambda row: f"{Path(row.image_path).name}: {row.pixel_size_ratio:.2f} times")
    return [f"{shown} state another pixel size than the model's training images: the model segments pixels as they "
            f"are, so objects look larger or smaller to it than in training; resample them to the training images' "
            f"pixel size for the masks it was trained to give"] if len(off) else []


def orientation_note(table: pd.DataFrame, package: Package) -> str:
    """The line on volumes stored in another orientation than most of the package's training volumes ('' for none,
    or a package that does not record it)."""
    usual = package.training_data.get("axis_codes")
    other = table[table["axis_codes"].fillna("").ne("") & table["axis_codes"].ne(usual)] if usual and \
        "axis_codes" in table else table.iloc[:0]
    return (f"{named(other, lambda row: f'{Path(row.image_path).name}: {row.axis_codes}')} are stored in another "
            f"orientation than most training volumes ({usual}): the model segments voxels as stored, so it sees them "
            f"mirrored or turned and may swap classes told apart by side (left and right); reorient them to {usual} "
            f"first for the masks it was trained to give") if len(other) else ""


def channel_notes(table: pd.DataFrame) -> list[str]:
    """The line on images with a channel of a single value, not wholly constant (a modality missing); or none (slides
    have no channels checked)."""
    if "constant_channels" not in table:
        return []
    some = table["constant_channels"].map(lambda found: isinstance(found, (list, np.ndarray)) and len(found) > 0)
    lacking = table[some & ~table["constant"].fillna(False).astype(bool)]
    shown = named(lacking, lambda row: f"{Path(row.image_path).name}: {[int(c) for c in row.constant_channels]}")
    return [f"{shown} have a channel of a single value (a modality missing, all zeros?): the model uses every "
            f"channel, so their masks may be wrong"] if len(lacking) else []


def named(rows: pd.DataFrame, label) -> str:
    """'2 image(s) (a.png, b.png)': how many rows, and the `label` of each of the first three."""
    shown = ", ".join(label(row) for row in rows.head(3).itertuples())
    return f"{len(rows)} image(s) ({shown}{', ...' if len(rows) > 3 else ''})"


def check_images(files: list[Path], package: Package, threads: int = 1, spec: str = "the input",
                 root: Path | None = None, slide_pixel_size: float | None = None,
                 rois: str | None = None, rois_key: str = "infer.rois") -> pd.DataFrame:
    """One row per image source (see `inspect_image`; a whole-slide image is only opened: `slide_row`; outputs named
    by their path below `root`, default: each file's stem, without nnU-Net's `_0000` where every name has it; with
    `rois` (infer.rois) the region of interest of each, `unetflow.infer.rois`), or InferInputError listing every
    problem of every file."""
    if not files:
        raise InferInputError(f"no image files matched {spec}; check the folder, glob or manifest")
    names = [output_name(Path(path), root) if root is not None else case_stem(path) for path in files]
    slides = [is_slide(path) for path in files]
    names = names if any(slides) else without_channel_suffix(names)  # slides are named by the Snakefile too

    def inspect(path, name, slide: bool):
        if slide:
            return slide_row(path, name, package, slide_pixel_size)
        return inspect_image(Path(path), name, package)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda item: inspect(*item), zip(files, names, slides)))
    problems = [problem for _, found in results for problem in found]
    problems += slide_problems(package) if any(slides) else []
    table, roi_problems = with_rois(pd.DataFrame([row for row, _ in results if row is not None]), rois, rois_key)
    problems += roi_problems + duplicate_names(table)
    if problems:
        raise InferInputError(f"{len(problems)} problem(s) in the images to segment:\n  - " + "\n  - ".join(problems))
    return table


def subfolder_hint(spec: str) -> str:
    """For an input folder whose images lie in subfolders (`subfolder_note`): that note, to follow 'no image files
    matched'; else ''."""
    note = subfolder_note(spec)
    return f" ({note})" if note else ""


def duplicate_names(table: pd.DataFrame) -> list[str]:
    """Outputs that would be written under one name: two images of one stem in one folder (x.png and x.tif), or a
    stack page `x_s0` beside a file `x_s0`."""
    names = {}
    for source in table.to_dict("records"):
        for name, _ in units(source):
            names.setdefault(name, []).append(source["image_path"])
    return [f"duplicate image name '{name}': {', '.join(paths)}; their masks would overwrite each other; rename one"
            for name, paths in names.items() if len(paths) > 1]


# ------------------------------------------------------------------------------------------- command line


def main(argv=None) -> None:
    """Segment a folder, glob or manifest of images with a model package (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m unetflow.infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model package (results/<experiment>/package/*.pt)")
    parser.add_argument("--input", required=True,
                        help="a folder, a quoted glob ('scans/*.tif') or a CSV/Parquet manifest (column image)")
    parser.add_argument("--output", required=True, help="folder for the masks and summary.parquet")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--save-probabilities", action="store_true", help="also write float16 <id>.npz probabilities")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="of each DICOM series also write a DICOM SEG <id>.seg.dcm referencing it")
    parser.add_argument("--slide-pixel-size", type=float, default=None,
                        help="µm per pixel of the training images: the pixel size slides are predicted at")
    parser.add_argument("--slide-region", type=int, default=REGION, help="region size of slides (pixels)")
    parser.add_argument("--slide-object-size", type=int, default=OBJECT_SIZE,
                        help="instance mode: the largest object on slides (pixels of the predicted level)")
    parser.add_argument("--no-slide-geojson", dest="slide_geojson", action="store_false",
                        help="do not write <name>.geojson polygons (for QuPath) beside slide labels")
    parser.add_argument("--slide-tissue", choices=TISSUE_RULES, default="auto",
                        help="where slides' tissue is (regions without it are not predicted): auto, dark, bright, all")
    parser.add_argument("--min-object-size", type=int, default=None,
                        help="instance packages: drop objects under this many pixels (default: the package's "
                             "predict.min_object_size)")
    parser.add_argument("--rois", default=None,
                        help="folder or glob of the images' regions of interest (paired by name as data.rois): masks "
                             "are background outside them")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    try:
        predictor = Predictor.load(args.model, args.device)
        if args.min_object_size is not None:
            package = predictor.package
            predictor.package = replace(package, predict=dict(package.predict, min_object_size=args.min_object_size))
        checked = check_images(listed_images(args.input), predictor.package, args.threads,
                               f"--input '{args.input}'{subfolder_hint(args.input)}", input_root(args.input),
                               args.slide_pixel_size, args.rois, "--rois")
        images, slides = checked[checked["kind"] != "slide"], checked[checked["kind"] == "slide"]
        for note in input_notes(checked, predictor.package, args.slide_pixel_size, args.rois):
            log.warning(note)
        if len(slides):
            predict_slides(predictor, slides["image_path"].tolist(), args.output, args.slide_pixel_size,
                           args.slide_region, slides["id"].tolist(), args.slide_object_size,
                           args.slide_geojson, args.slide_tissue).to_parquet(Path(args.output, SLIDES_FILE))
        if len(images):
            summary, objects = predictor.predict_sources(images, args.output, args.save_probabilities,
                                                         args.dicom_seg)
    except ValueError as error:  # PackageError, InferInputError, DataValidationError: said in full, no traceback
        raise SystemExit(f"error: {error}") from None
    if len(images):
        summary.to_parquet(Path(args.output, "summary.parquet"))
        if predictor.package.instance_target:
            objects.to_parquet(Path(args.output, OBJECTS_FILE))
        if note := small_objects_note(summary, predictor.package.predict["min_object_size"]):
            log.warning(note)
    log.info("segmented %d image(s) and %d slide(s) into %s", len(images), len(slides), args.output)

if __name__ == "__main__":
    main()
