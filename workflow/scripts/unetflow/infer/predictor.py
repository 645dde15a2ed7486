"""The one prediction path: a model package applied to images. `predict` scores what it writes, `infer` segments new
images with it, and the Python API and command line use it as it is.

An image is read in array order (`unetflow.io.sources`), preprocessed exactly as the training sources were
(`unetflow.data.preprocess.network_array`), and predicted by the package's ensemble: each U-Net by tiled sliding window
with its own training patch, on the array resized by the resolution it was trained at (its plan's), a 3D model on the
whole network array, a 2D model slice by slice, their softmax averaged; the mean softmax is brought back onto the
image's own grid (linear), then turned into labels (argmax, optionally the largest component per class) or, in the
instance mode, objects (watershed), and written in the encoding of the training masks with one summary row per unit and
class. A region model (data.regions) gives the sigmoid of each region instead, averaged and brought back alike; each
region is predicted where it exceeds 0.5 (optionally only its largest component) and the regions are written as labels
in their order (`unetflow.io.regions.Regions.labels_of`).
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from unetflow.data.preprocess import network_array
from unetflow.gpu import pick_device, uses_bf16
from unetflow.infer.package import Package, load_package, versions
from unetflow.infer.rois import within_roi
from unetflow.infer.summary import unit_summary
from unetflow.instances.objects import object_table, source_objects
from unetflow.io.dicom_seg import segments_of, write_seg
from unetflow.io.formats import is_series, seg_path
from unetflow.io.prediction_files import prediction_path, write_class_mask, write_instance_mask, write_probabilities
from unetflow.io.regions import Regions
from unetflow.io.resample import resample_probabilities, resize_slices, scaled_plane
from unetflow.io.sources import (
    is_grey_colour,
    read_source_image,
    read_source_roi,
    slice_axis,
    source_spacing,
    unit_array,
    units,
)
from unetflow.io.store import IMAGE_DTYPE
from unetflow.net.model import UNet
from unetflow.net.tiling import prepare_for_inference, sliding_window_predict, spatial_dims

log = logging.getLogger("unetflow.infer.predictor")
OBJECTS_FILE = "objects.parquet"  # the per-object table of the instance mode, beside the masks


def model_from_weights(hparams: dict, weights: dict, device: torch.device) -> UNet:
    """A U-Net with `hparams` and `weights`, prepared for inference on `device`."""
    model = UNet(**hparams)
    model.load_state_dict(weights)
    return prepare_for_inference(model, device)


def model_probabilities(model: torch.nn.Module, image: torch.Tensor, patch, cfg: dict, device: torch.device,
                        sigmoid: bool = False) -> torch.Tensor:
    """One model's softmax (K, Z, Y, X) (with `sigmoid`, a region model's sigmoid of each region) of a network array
    (C, Z, Y, X): a 3D model on the whole array, a 2D model on each slice; mirrored (cfg['mirror']) along every
    spatial axis it sees."""
    dims = spatial_dims(model)
    if dims == 2:
        return torch.stack([model_probabilities_2d(model, image[:, z], patch, cfg, device, sigmoid)
                            for z in range(image.shape[1])], dim=1)
    return model_probabilities_2d(model, image, patch, cfg, device, sigmoid)


def model_probabilities_2d(model, image: torch.Tensor, patch, cfg: dict, device: torch.device,
                           sigmoid: bool = False) -> torch.Tensor:
    """A model's tiled softmax (or sigmoid) of an image of its own dimensionality ((C, Y, X) or (C, Z, Y, X))."""
    dims = image.ndim - 1
    return sliding_window_predict(model, image, tuple(patch), overlap=cfg["overlap"], batch_size=cfg["batch_size"],
                                  mirror_axes=tuple(range(dims)) if cfg["mirror"] else (), device=device,
                                  bf16=uses_bf16(cfg["precision"], device), sigmoid=sigmoid)


def mean_probabilities(models, patches, network: np.ndarray, cfg: dict, device: torch.device,
                       resolutions=None, sigmoid: bool = False) -> torch.Tensor:
    """The mean softmax (K, Z, Y, X) (with `sigmoid`, the mean sigmoid of region models) of `models` (each with its
    patch and the resolution it was trained at, 1 when None) on a network array (C, Z, Y, X); cfg: the prediction
    settings (overlap, batch_size, mirror, precision)."""
    total = None
    for model, patch, resolution in zip(models, patches, resolutions or [1.0] * len(models)):
        probs = resolution_probabilities(model, network, patch, cfg, device, resolution, sigmoid)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(models))


def resolution_probabilities(model, network: np.ndarray, patch, cfg: dict, device: torch.device, resolution: float,
                             sigmoid: bool = False) -> torch.Tensor:
    """A model's softmax (or region sigmoid) (K, Z, Y, X) on a network array (C, Z, Y, X), each slice first resized
    by the `resolution` the model was trained at and its output brought back onto the array's grid."""
    if resolution == 1:
        return model_probabilities(model, torch.from_numpy(network), patch, cfg, device, sigmoid)
    plane = scaled_plane(network.shape[2:], resolution)
    small = resize_slices(network, plane).astype(network.dtype)
    probs = model_probabilities(model, torch.from_numpy(small), patch, cfg, device, sigmoid).numpy()
    return torch.from_numpy(resample_probabilities(probs, network.shape[1:]))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component (4-connected in 2D, 6 in 3D) of a boolean mask; ties keep the first in
    raster order."""
    components, count = ndimage.label(mask)
    if count < 2:
        return mask
    return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))


def keep_largest_components(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A copy of `labels` (2D or 3D) in which every foreground class keeps only its `largest_component`; the pixels
    of its other components become background (class 0)."""
    kept = labels.copy()
    for c in range(1, num_classes):
        mask = labels == c
        kept[mask & ~largest_component(mask)] = 0
    return kept


def keep_largest_regions(masks: np.ndarray) -> np.ndarray:
    """Region masks (R, ...) each reduced to its `largest_component`."""
    return np.stack([largest_component(mask) for mask in masks])


def labels_of(probs: np.ndarray, regions: Regions | None) -> np.ndarray:
    """Class indices uint8 of probabilities (K or R, ...): the argmax, or of a region model (`regions`) each region
    where its sigmoid exceeds 0.5, written as labels."""
    return probs.argmax(0).astype(np.uint8) if regions is None else regions.labels_of(probs > 0.5)


def pixel_confidence(probs: np.ndarray, regions: Regions | None) -> np.ndarray:
    """How sure the prediction of each pixel is: the maximum softmax, or of a region model the least certain of its
    region decisions, the minimum over regions of max(p, 1 - p)."""
    return probs.max(axis=0) if regions is None else np.maximum(probs, 1 - probs).min(axis=0)


def channel_problem(channels: int, package: Package) -> str | None:
    """A channel count the package's models were not trained on (unless the package converts channels), or None."""
    if channels == package.input_channels or package.convert_channels and channels in (1, 3):
        return None
    return (f"{channels} channel(s), but the model was trained on {package.input_channels}-channel images; give it "
            f"those (a volume: the training's modalities, in their order; a 2D image or a slide: convert it, or train "
            f"with data.channels: {package.input_channels} to convert automatically)")


def image_problems(image: np.ndarray, package: Package) -> list[str]:
    """What keeps a read image (C, Z, Y, X) from being segmented by the package: a channel count its models were not
    trained on (`channel_problem`; colour images of three equal channels are grey), NaN or Inf pixels."""
    grey = package.input_channels == 1 and is_grey_colour(image)  # read as grey, as training read such images
    problems = [problem for problem in [None if grey else channel_problem(image.shape[0], package)] if problem]
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        problems.append(f"{int((~np.isfinite(image)).sum())} pixels are NaN or Inf; replace them")
    return problems


class Predictor:
    """A model package ready to segment images: `predict_sources` for checked sources (manifest rows: an `id`, which
    names the outputs and may hold sub-folders, the files and their kind), `source_probabilities` for one source,
    `predict_array` for one image in memory."""

    def __init__(self, package: Package, device: str = "auto"):
        self.package, self.device = package, pick_device(device)
        self.models = [model_from_weights(m["hparams"], m["weights"], self.device) for m in package.models]

    @classmethod
    def load(cls, path, device: str = "auto") -> "Predictor":
        return cls(load_package(path), device)

    def network_array(self, image: np.ndarray, spacing=None, axis: int = 0) -> np.ndarray:
        """A read image (C, Z, Y, X) preprocessed as the training sources were (see `network_array`), float16 as
        stored."""
        if image.ndim != 4:
            raise ValueError(f"network_array takes a read image (channels, slices, height, width), got shape "
                             f"{image.shape}; a 2D image (H, W) is image[None, None]")
        package = self.package
        return network_array(image, package.input_channels, package.preprocess, spacing, axis).astype(IMAGE_DTYPE)

    def probabilities(self, network: np.ndarray) -> torch.Tensor:
        """The mean softmax (K, Z, Y, X) of the package's models on a network array (C, Z, Y, X); of region models
        the mean sigmoid of each region (R, Z, Y, X)."""
        return mean_probabilities(self.models, self.package.patches, network, self.package.predict, self.device,
                                  self.package.resolutions, self.package.regions is not None)

    def image_probabilities(self, image: np.ndarray, spacing=None, axis: int = 0) -> np.ndarray:
        """The mean softmax (K, Z, Y, X) (or region sigmoid) float32 of a read image (C, Z, Y, X) on its own grid
        (`spacing`: a volume's, array order)."""
        probs = self.probabilities(self.network_array(image, spacing, axis)).numpy()
        return resample_probabilities(probs, image.shape[1:])

    def source_probabilities(self, row) -> np.ndarray:
        """The mean softmax (K, Z, Y, X) (or region sigmoid) of a source (a manifest row) on its file's grid."""
        return self.image_probabilities(read_source_image(row), source_spacing(row), slice_axis(row))

    def predict_array(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class indices (H, W) uint8 (before postprocessing) and probabilities (K, H, W) (of a region model:
        (R, H, W), one sigmoid per region) float32 of a 2D image (H, W) or (H, W, C), channels last (an alpha
        channel dropped, as when files are read)."""
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] > 4):
            raise ValueError(f"predict_array takes a 2D image (H, W) or (H, W, C) with the channels last, got shape "
                             f"{image.shape}")
        colours = {2: 1, 4: 3}.get(image.shape[-1]) if image.ndim == 3 else None  # grey or RGB with alpha
        image = image[..., :colours] if colours else image
        image = np.moveaxis(image[..., None] if image.ndim == 2 else image, -1, 0)[:, None]
        problems = image_problems(image, self.package)
        if problems:
            raise ValueError(f"the image: {'; '.join(problems)}")
        probs = self.image_probabilities(image)[:, 0]
        return self.labels(probs), probs

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Class indices uint8 of probabilities (K or R, ...): see `labels_of`."""
        return labels_of(probs, self.package.regions)

    def predict_sources(self, sources: pd.DataFrame, out_dir, save_probabilities: bool = False,
                        dicom_seg: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Predict every source, write its mask (and probabilities; with `dicom_seg`, of a DICOM series also a DICOM
        SEG) under out_dir; the summary table and the object table (of the instance mode; empty otherwise)."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        rows, objects = [], []
        for number, source in enumerate(sources.to_dict("records"), start=1):
            source_rows, source_objects = self.predict_source(source, out_dir, save_probabilities, dicom_seg)
            rows, objects = rows + source_rows, objects + source_objects
            log.info("segmented %d/%d: %s", number, len(sources), source["image_path"])
        return pd.DataFrame(rows), object_table(objects)

    def predict_source(self, source: dict, out_dir, save_probabilities: bool,
                       dicom_seg: bool) -> tuple[list[dict], list[dict]]:
        """The mask of one source (background outside its region of interest, if it has one) written to
        out_dir/<id>.<suffix> (and with `dicom_seg`, of a DICOM series, its SEG <id>.seg.dcm; without, an earlier SEG
        of that name removed); its summary rows and (in the instance mode) its object rows."""
        probs = within_roi(self.source_probabilities(source), read_source_roi(source),
                           self.package.regions is not None)
        target, path = self.package.instance_target, prediction_path(out_dir, source["id"], source,
                                                                     bool(self.package.instance_target))
        labels, objects, small = self.postprocessed(source, probs)
        if target:
            path = write_instance_mask(path, labels, source)
        else:
            path = write_class_mask(path, labels, self.package.classes, source, self.package.palette)
        if dicom_seg and is_series(source["image_path"]):
            write_seg(seg_path(path), labels, source, segments_of(self.package.classes, bool(target)),
                      versions()["unetflow"])
        else:
            seg_path(path).unlink(missing_ok=True)  # an earlier run's SEG of this name would disagree with the mask
        confidence = pixel_confidence(probs, self.package.regions)
        counted, rows = self.summary_labels(labels, probs), []
        for name, unit in units(source):
            found = {"objects": len({row["id"] for row in objects if row["case"] == name}),
                     "small_objects": small[name]} if target else {}
            rows += [dict(row, **found) for row in unit_summary(name, source, unit, path, unit_array(counted, unit),
                                                                unit_array(confidence, unit), self.package.classes,
                                                                self.package.regions)]
            if save_probabilities:
                part = probs[:, unit]
                write_probabilities(part[:, 0] if part.shape[1] == 1 else part, out_dir, name)
        return rows, objects

    def postprocessed(self, source: dict, probs: np.ndarray) -> tuple[np.ndarray, list[dict], dict[str, int]]:
        """What a source's softmax (K, Z, Y, X) is written as: class indices (argmax; the largest component per class
        of each unit with predict.largest_component; of a region model the regions, each reduced to its largest
        component per unit, written as labels), or in the instance mode object ids, their rows and per unit the
        number of objects dropped under predict.min_object_size."""
        settings, target, regions = self.package.predict, self.package.instance_target, self.package.regions
        if target:
            return source_objects(units(source), probs, target, settings["min_object_size"],
                                  self.package.object_probability)
        if not settings["largest_component"]:
            return self.labels(probs), [], {}
        if regions is not None:
            masks = probs > 0.5
            for _, unit in units(source):
                masks[:, unit] = keep_largest_regions(masks[:, unit])
            return regions.labels_of(masks), [], {}
        labels = self.labels(probs)
        for _, unit in units(source):
            labels[unit] = keep_largest_components(labels[unit], self.package.num_classes)
        return labels, [], {}

    def summary_labels(self, written: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """The class of every pixel the summary counts: the written labels, or in the instance mode the pixels of the
        written objects, each of its argmax class (interior or boundary; background counted as the first object
        class), every other pixel background."""
        return np.where(written > 0, np.maximum(probs.argmax(0), 1), 0) if self.package.instance_target else written

