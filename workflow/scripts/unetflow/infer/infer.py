"""Inference on new, unlabelled images with a model package: check the images, preprocess them as the model's
training data were, predict, and write masks in the training masks' encoding plus a summary per image and class.
A package of the instance mode writes instance masks (as `predict` writes them: 16-bit ids, the objects of its
instance target) and a table of the objects (`objects.parquet` beside the masks); its summary counts the objects.

The same functions serve the workflow's `infer` rules, the Python API (`Predictor`) and the command line:

    python -m unetflow.infer --model results/unet/package/unet.pt --input new_images/ --output segmented/
"""

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unetflow.data.pairing import listed_images
from unetflow.data.preprocess import network_images
from unetflow.gpu import pick_device
from unetflow.infer.ensemble import labels_from_probabilities, model_from_weights, predict_probabilities, predict_unit
from unetflow.infer.package import Package, load_package
from unetflow.infer.summary import unit_summary
from unetflow.instances.objects import object_table
from unetflow.io.formats import ImageReadError, case_stem
from unetflow.io.images import image_info
from unetflow.io.nifti import volume_spacing
from unetflow.io.prediction_files import (
    OBJECTS_FILE,
    prediction_path,
    write_labels,
    write_probabilities,
    write_unit_objects,
)
from unetflow.io.sources import slice_id, source_images, source_kind
from unetflow.io.store import CASE_IMAGE_DTYPE
from unetflow.io.volumes import slice_axis_target, volume_slice_axis

log = logging.getLogger("unetflow.infer.infer")


class InferInputError(ValueError):
    """Images given for inference have problems; the message lists every one with its file."""


# ------------------------------------------------------------------------------------------------- checking


def inspect_image(path: Path, package: Package) -> tuple[dict | None, list[str]]:
    """One image source decoded in full and checked against the model: its row (id, kind, slices, geometry) and
    its problems."""
    try:
        kind = source_kind(path, image_info(path))
        axis = volume_slice_axis(path, package.slice_axis) if kind == "volume" else 0
        slices = source_images(dict(kind=kind, image_path=str(path), slice_axis=axis))
    except ImageReadError as error:
        return None, [str(error)]
    problems = []
    channels = slices.shape[3]
    if channels != package.input_channels and not package.convert_channels:
        problems.append(f"{path}: {channels} channel(s), but the model was trained on {package.input_channels}-"
                        f"channel images; convert the image (or train with data.channels to convert automatically)")
    if slices.dtype.kind == "f" and not np.isfinite(slices).all():
        problems.append(f"{path}: {int((~np.isfinite(slices)).sum())} pixels are NaN or Inf; replace them")
    if kind != "volume" and any(m["hparams"].get("dims", 2) == 3 for m in package.models):
        problems.append(f"{path}: a 2D {'TIFF stack' if kind == 'stack' else 'image'}, but {package.path} holds 3D "
                        f"models, which segment NIfTI volumes only; segment it with a package of 2D models")
    row = dict(id=case_stem(path), image_path=str(path), kind=kind, slices=int(slices.shape[0]),
               slice_axis=axis, height=int(slices.shape[1]), width=int(slices.shape[2]), channels=int(channels),
               dtype=str(slices.dtype))
    return row, problems


def check_images(files: list[Path], package: Package, threads: int = 1, spec: str = "the input") -> pd.DataFrame:
    """One row per image source (see `inspect_image`), or InferInputError listing every problem of every file."""
    if not files:
        raise InferInputError(f"no image files matched {spec}; check the folder, glob or manifest")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda path: inspect_image(Path(path), package), files))
    problems = [problem for _, found in results for problem in found]
    table = pd.DataFrame([row for row, _ in results if row is not None])
    problems += duplicate_names(table)
    if problems:
        raise InferInputError(f"{len(problems)} problem(s) in the images to segment:\n  - " + "\n  - ".join(problems))
    return table


def duplicate_names(table: pd.DataFrame) -> list[str]:
    """Masks that would be written under one name: the same stem in two folders, or a stack page `x_s0` beside a
    file `x_s0`."""
    names = {}
    for source in table.to_dict("records"):
        for name, _ in unit_rows(source):
            names.setdefault(name, []).append(source["image_path"])
    return [f"duplicate image name '{name}': {', '.join(paths)}; their masks would overwrite each other; rename one"
            for name, paths in names.items() if len(paths) > 1]


# ----------------------------------------------------------------------------------------------- predicting


class Predictor:
    """A model package ready to segment images: `predict_array` for one image in memory, `predict_sources` for
    checked files (see `check_images`), `predict_files` for files as they are."""

    def __init__(self, package: Package, device: str = "auto"):
        self.package, self.device = package, pick_device(device)
        self.models = [model_from_weights(m["hparams"], m["weights"], self.device) for m in package.models]

    @classmethod
    def load(cls, path, device: str = "auto") -> "Predictor":
        return cls(load_package(path), device)

    def network_image(self, image: np.ndarray) -> np.ndarray:
        """A read (H, W) or (H, W, C) image preprocessed as the training cases were: (C, H, W), float16 as stored.
        ValueError for a channel count the model was not trained on (unless it converts) and for NaN/Inf."""
        image = image[..., None] if image.ndim == 2 else image
        channels, expected = image.shape[2], self.package.input_channels
        if channels != expected and not (self.package.convert_channels and channels in (1, 3)):
            raise ValueError(f"an image of {channels} channel(s), but the model was trained on {expected}-channel "
                             f"images")
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            raise ValueError(f"the image has {int((~np.isfinite(image)).sum())} NaN or Inf pixels")
        return self.network_images(image[None])[0]

    def network_images(self, images: np.ndarray, voxel_spacing=None, axis: int = 2) -> list[np.ndarray]:
        """Read slices (S, H, W, C) of one source preprocessed as the training cases were (a volume's slices
        normalised together and resampled to the package's spacing): (C, H', W') float16 each, as stored."""
        return [image.astype(CASE_IMAGE_DTYPE) for image in
                network_images(images, self.package.input_channels, self.package.preprocess, voxel_spacing, axis)]

    def probabilities(self, image: np.ndarray) -> torch.Tensor:
        """Mean softmax (K, H, W) of the package's models on a read (H, W[, C]) image."""
        return predict_probabilities(self.models, self.network_image(image), self.package.patches,
                                     self.package.predict, self.device)

    def predict_array(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class indices (H, W) uint8 (before postprocessing) and probabilities (K, H, W) float32 of an image."""
        probs = self.probabilities(image)
        return labels_from_probabilities(probs), probs.numpy()

    def predict_sources(self, sources: pd.DataFrame, out_dir, save_probabilities: bool = False) -> pd.DataFrame:
        """Predict every checked source, write its masks (and probabilities) to out_dir; the summary table."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        rows, objects = [], []
        for number, source in enumerate(sources.to_dict("records"), start=1):
            source_rows, source_objects = self.predict_source(source, out_dir, save_probabilities)
            rows, objects = rows + source_rows, objects + source_objects
            log.info("segmented %d/%d: %s", number, len(sources), source["image_path"])
        if self.package.instance_target:
            object_table(objects).to_parquet(Path(out_dir, OBJECTS_FILE))
        return pd.DataFrame(rows)

    def predict_files(self, files: list, out_dir, save_probabilities: bool = False, threads: int = 1,
                      spec: str = "the input") -> pd.DataFrame:
        """`check_images` (`spec`: where the files came from, for its message) then `predict_sources`."""
        return self.predict_sources(check_images([Path(f) for f in files], self.package, threads, spec), out_dir,
                                    save_probabilities)

    def predict_source(self, source: dict, out_dir, save_probabilities: bool) -> tuple[list[dict], list[dict]]:
        """Masks of one source (a 2D file, each page of a stack, or a volume as one), their summary rows and (in
        the instance mode) their object rows."""
        images, volume = source_images(source), source["kind"] == "volume"
        spacing = list(volume_spacing(source["image_path"])) if volume else None
        rows, objects = [], []
        for name, unit in unit_rows(source):
            network = self.network_images(images if volume else images[unit["slice"].tolist()], spacing,
                                          int(source["slice_axis"]))
            labels, probabilities = predict_unit(self.models, network, self.package.patches, self.package.predict,
                                                 self.device, self.package.num_classes, unit,
                                                 slice_axis_target(self.package.preprocess))
            if self.package.instance_target:
                path, unit_objects = write_unit_objects(probabilities, unit, self.package.instance_target,
                                                        self.package.predict["min_object_size"], out_dir, name)
                objects += unit_objects
                summary = [dict(row, objects=len(unit_objects)) for row in
                           unit_summary(name, source, path, labels, probabilities, self.package.classes)]
            else:
                path = write_labels(prediction_path(out_dir, name, unit), labels, self.package.classes,
                                    self.package.palette, source["image_path"], int(source["slice_axis"]))
                summary = unit_summary(name, source, path, labels, probabilities, self.package.classes)
            if save_probabilities:
                for case_id, probs in zip(unit["id"], probabilities):
                    write_probabilities(probs, out_dir, case_id)
            rows += summary
        return rows, objects


def unit_rows(source: dict) -> list[tuple[str, pd.DataFrame]]:
    """The prediction units of a source as manifest-like rows: a volume as one unit of its slices, every page of a
    stack and a 2D file as a unit of its own (named as `predict` names them)."""
    kind = source["kind"]
    rows = pd.DataFrame([dict(id=slice_id(source["id"], kind, index), image_path=source["image_path"], kind=kind,
                              slice=index, slice_axis=source["slice_axis"], volume=source["id"],
                              height=source["height"], width=source["width"])
                         for index in range(source["slices"])])
    if kind == "volume":
        return [(source["id"], rows)]
    return [(row["id"], rows.iloc[[position]]) for position, row in enumerate(rows.to_dict("records"))]


# ------------------------------------------------------------------------------------------- command line


def main(argv=None) -> None:
    """Segment a folder, glob or manifest of images with a model package (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m unetflow.infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model package (results/<experiment>/package/*.pt)")
    parser.add_argument("--input", required=True,
                        help="a folder, a quoted glob ('scans/*.tif') or a CSV/Parquet manifest (column image)")
    parser.add_argument("--output", required=True, help="folder for the masks and summary.parquet")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--save-probabilities", action="store_true", help="also write float16 <id>.npz softmax")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    try:
        predictor = Predictor.load(args.model, args.device)
        files = listed_images(args.input)
        summary = predictor.predict_files(files, args.output, args.save_probabilities, args.threads,
                                          f"--input '{args.input}'")
    except ValueError as error:  # PackageError, InferInputError, DataValidationError: said in full, no traceback
        raise SystemExit(f"error: {error}") from None
    summary.to_parquet(Path(args.output, "summary.parquet"))
    log.info("segmented %d image(s) into %s", len(files), args.output)


if __name__ == "__main__":
    main()
