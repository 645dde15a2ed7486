"""Preprocessing: the settings as applied (`auto` resolved from the data-set fingerprint), and every source turned into
the arrays the network sees, stored once per source (`unetflow.io.store`): channels converted, intensities
normalised (a volume as a whole, each page of a 2D file or stack on its own), volumes resampled to the target
spacing (in-plane, then along the slice axis), 2D images scaled by `scale`, masks turned into class indices (or the
instance mode's target, object ids and loss weights) on the same grid.

`network_array` is the one transformation of an image into network input: preprocessing stores its result, and the
predictor applies it to every image it segments, so both see the same arrays.
"""

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pandas as pd

from unetflow.data.normalization import normalize_with
from unetflow.instances.targets import instance_target, object_ids, training_target
from unetflow.io.labels import IGNORE_INDEX, class_values
from unetflow.io.resample import (
    resample_nearest,
    resample_source_image,
    resample_source_labels,
    resampled_shape,
    resize_slices,
    scaled_plane,
)
from unetflow.io.sources import (
    array_spacing,
    read_source_image,
    read_source_mask,
    read_source_roi,
    slice_axis,
    source_labels,
    source_spacing,
)
from unetflow.io.store import save_source


def preprocess_settings(cfg: dict, fingerprint: dict) -> dict:
    """The preprocessing as applied (stored beside the sources and in model packages): the normalisation scheme with
    its statistics, the target voxel spacing (x, y, z: the files' axis order) and the scale of 2D images, `auto`
    taken from the fingerprint, each with its source; `weight_map`: w0 and sigma of the instance target's loss
    weights (the config's, only in that mode; else None). ValueError naming the key when the scheme needs statistics
    the training cases do not give."""
    scheme, scheme_source = applied_value(cfg, "normalization", fingerprint, "normalization")
    if scheme == "ct" and fingerprint["ct"] is None:
        raise ValueError("preprocess.normalization: ct needs the intensities of the training cases' foreground, but "
                         "their masks have no foreground voxels; use zscore or window")
    spacing, spacing_source = applied_value(cfg, "spacing", fingerprint, "target_spacing")
    scale, scale_source = applied_value(cfg, "scale", fingerprint, "scale")
    return dict(normalization=scheme, normalization_source=scheme_source,
                clip_percentiles=cfg["clip_percentiles"] if scheme in ("zscore", "zscore_nonzero", "minmax") else None,
                ct=fingerprint["ct"] if scheme == "ct" else None,
                window=(cfg["window"] or fingerprint.get("window")) if scheme == "window" else None,
                spacing=None if spacing is None else [float(size) for size in spacing], spacing_source=spacing_source,
                scale=float(scale), scale_source=scale_source, weight_map=cfg.get("weight_map"))


def applied_value(cfg: dict, key: str, fingerprint: dict, planned: str) -> tuple:
    """A preprocess setting and its source: the config's value, or for `auto` the fingerprint's `planned` value
    with its reason."""
    if cfg[key] != "auto":
        return cfg[key], "config"
    return fingerprint[planned], f"auto: {fingerprint[planned + '_reason']}"


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """An image (C, ...) with `channels` channels: RGB to grey by luminance (ITU-R BT.601, as OpenCV), grey repeated
    into RGB, unchanged when it has them already."""
    if image.shape[0] == channels:
        return image
    if channels == 1:
        pixels = np.moveaxis(image, 0, -1).reshape(-1, 1, 3).astype(np.float32, copy=False)
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).reshape(1, *image.shape[1:])
    return np.repeat(image, channels, axis=0)


def network_shape(shape, spacing, settings: dict, axis: int) -> tuple[int, int, int]:
    """The grid (Z, Y, X) a source of `shape` is stored and predicted on: a volume (its array-order `spacing`, its
    slice `axis`) resampled to settings['spacing'] (none when null), a 2D file or stack (`spacing` None) scaled in-plane
    by settings['scale']."""
    if spacing is None:
        return (shape[0], *scaled_plane(shape[1:], settings["scale"]))
    if settings["spacing"] is None:
        return tuple(shape)
    return resampled_shape(shape, spacing, array_spacing(settings["spacing"], axis))


def network_array(image: np.ndarray, channels: int, settings: dict, spacing=None, axis: int = 0) -> np.ndarray:
    """A read image (C, Z, Y, X) as the network sees it, (C, Z', Y', X') float32: `channels` channels, normalised
    (`settings`: see `preprocess_settings`) and on its `network_shape` grid; a volume (array-order `spacing` given,
    slice `axis`) normalised as one and resampled by cubic spline, the pages of a 2D file or stack each normalised
    on its own and resized by pixel-area averaging."""
    image = to_channels(image, channels)
    shape = network_shape(image.shape[1:], spacing, settings, axis)
    if spacing is not None:
        return resample_source_image(normalize_with(image, settings), shape)
    pages = np.stack([normalize_with(image[:, z], settings) for z in range(image.shape[1])], axis=1)
    return resize_slices(pages, shape[1:])


def source_targets(row, classes: pd.DataFrame, weight_map: dict | None = None):
    """What a source's mask trains: class indices (Z, Y, X) uint8, or in the instance mode the target of its objects
    (`unetflow.instances.targets.training_target`, slice by slice, with the `weight_map` settings); with the object
    ids (Z, Y, X; stray specks of an id dropped, `object_ids`) and the loss weights (or None each)."""
    target = instance_target(classes)
    if not target:
        return source_labels(row, classes)[0], None, None
    ids = object_ids(read_source_mask(row, ids=True))
    labels, weights = zip(*(training_target(plane, target, weight_map) for plane in ids))
    return np.stack(labels), ids, None if weights[0] is None else np.stack(weights)


def stored_spacing(row, settings: dict) -> list[float] | None:
    """The array-order spacing of a source as stored: the target spacing for a resampled volume, its own otherwise."""
    spacing = source_spacing(row)
    if spacing is None or settings["spacing"] is None:
        return spacing
    return array_spacing(settings["spacing"], slice_axis(row))


def preprocess_source(row, classes: pd.DataFrame, out_dir: str, settings: dict) -> dict:
    """Preprocess one source (`settings`: see `preprocess_settings`) into out_dir/<id>/; its row of the preprocess
    table (see `unetflow.io.store`)."""
    read = read_source_image(row)
    image = network_array(read, int(row["input_channels"]), settings, source_spacing(row), slice_axis(row))
    labels, ids, weights = source_targets(row, classes, settings["weight_map"])
    roi, shape = read_source_roi(row), image.shape[1:]
    if labels.shape != shape:
        labels = resample_source_labels(labels, shape)
        ids = None if ids is None else resample_nearest(ids, shape)
        weights = None if weights is None else resample_nearest(weights, shape)
        roi = None if roi is None else resample_nearest(roi.astype(np.uint8), shape) > 0
    path = save_source(out_dir, str(row["id"]), image, labels, ids, weights, roi)
    counted = labels[labels != IGNORE_INDEX]
    voxels = np.bincount(counted.ravel(), minlength=len(class_values(classes)))
    return dict(id=row["id"], kind=row["kind"], array_path=str(path), slices=shape[0], height=shape[1],
                width=shape[2], channels=image.shape[0], original_slices=read.shape[1], original_height=read.shape[2],
                original_width=read.shape[3], spacing=stored_spacing(row, settings),
                class_voxels=voxels.tolist(), foreground_fraction=float(voxels[1:].sum() / labels.size))


def preprocess_sources(manifest: pd.DataFrame, classes: pd.DataFrame, out_dir: str, settings: dict,
                       threads: int = 1) -> pd.DataFrame:
    """Preprocess every source of the ingest manifest into out_dir, each in a thread of its own; the preprocess
    table."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        rows = pool.map(lambda row: preprocess_source(row, classes, out_dir, settings), manifest.to_dict("records"))
        return pd.DataFrame(list(rows))
