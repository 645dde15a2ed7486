"""Prediction: apply one trained model or an ensemble of them, and write label masks (and optionally the class
probabilities) in the input's geometry and encoding."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from unetflow.io import mask_palette, write_mask
from unetflow.model import UNet
from unetflow.preprocess import class_colors, class_values
from unetflow.tiling import prepare_for_inference, sliding_window_predict
from unetflow.volumes import is_volume_unit, prediction_path, stack_slices, write_volume_labels

PROBABILITIES_KEY = "probabilities"


def load_model(checkpoint_path: str, device: torch.device) -> tuple[UNet, list[int]]:
    """The model of a checkpoint written by training, in eval mode, and its training patch size."""
    checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
    model = UNet(**checkpoint["hparams"]).to(device)
    model.load_state_dict(checkpoint["model"])
    return prepare_for_inference(model, device), checkpoint["patch_size"]


def load_models(checkpoint_paths: Sequence[str], device: torch.device) -> tuple[list[UNet], list[int]]:
    """The models of several checkpoints and their common patch size; ValueError when the patch sizes differ."""
    loaded = [load_model(path, device) for path in checkpoint_paths]
    patches = {tuple(patch) for _, patch in loaded}
    if len(patches) != 1:
        raise ValueError(f"the checkpoints {list(checkpoint_paths)} were trained with different patch sizes "
                         f"{sorted(patches)}; ensemble models trained with the same train.patch_size")
    return [model for model, _ in loaded], loaded[0][1]


def predict_probabilities(models: Sequence[torch.nn.Module], image: np.ndarray, patch: Sequence[int], cfg: dict,
                          device: torch.device) -> torch.Tensor:
    """Softmax (K, H, W), float32 on the CPU, of one preprocessed image (C, H, W), averaged over `models`; each
    model's by tiled sliding-window inference (cfg: overlap, batch_size, mirror)."""
    mirror_axes = (0, 1) if cfg["mirror"] else ()
    tensor = torch.from_numpy(image)
    total = None
    for model in models:
        probs = sliding_window_predict(model, tensor, tuple(patch), overlap=cfg["overlap"],
                                       batch_size=cfg["batch_size"], mirror_axes=mirror_axes, device=device)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(models))


def labels_from_probabilities(probs: torch.Tensor) -> np.ndarray:
    """Class-index map (H, W) uint8: the argmax over classes."""
    return probs.argmax(0).numpy().astype(np.uint8)


def postprocess_unit(labels: list[np.ndarray], num_classes: int, rows: pd.DataFrame,
                     largest_component: bool) -> list[np.ndarray]:
    """The class-index maps of one prediction unit, with `keep_largest_components` applied when asked: to each
    image of a 2D case, to the whole volume (its slices stacked, components connected in 3D) of a NIfTI volume."""
    if not largest_component:
        return labels
    if not is_volume_unit(rows):
        return [keep_largest_components(image_labels, num_classes) for image_labels in labels]
    axis = int(rows.iloc[0]["slice_axis"])
    return list(np.moveaxis(keep_largest_components(stack_slices(labels, axis), num_classes), axis, 0))


def keep_largest_components(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """A copy of `labels` (2D or 3D) in which every foreground class keeps only its largest face-connected
    component (4-connected in 2D, 6 in 3D); the pixels of its other components become background (class 0).
    Ties keep the first component in raster order."""
    kept = labels.copy()
    for c in range(1, num_classes):
        components, count = ndimage.label(labels == c)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            kept[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
    return kept


def write_prediction(labels: list[np.ndarray], classes: pd.DataFrame, out_dir: str, name: str,
                     rows: pd.DataFrame) -> Path:
    """Write the class indices of a prediction unit in the encoding of its mask: a 2D case to out_dir/<id>.png as
    the stored class values (0/255 stays 0/255; with the mask's palette when it has one) or as the class colours of
    colour-coded masks; the slices of a NIfTI volume to out_dir/<volume>.nii.gz with the input's affine and header."""
    path = prediction_path(out_dir, name, rows)
    colors = class_colors(classes)
    if path.suffix == ".png" and colors is not None:
        write_mask(path, colors.astype(np.uint8)[labels[0]])
        return path
    stored = [np.asarray(class_values(classes))[slice_labels] for slice_labels in labels]
    if path.suffix == ".png":
        write_mask(path, stored[0], palette=mask_palette(rows.iloc[0]["mask_path"]))
    else:
        write_volume_labels(path, stored, rows.iloc[0]["image_path"], int(rows.iloc[0]["slice_axis"]))
    return path


def write_probabilities(probs: torch.Tensor, out_dir: str, case_id: str) -> Path:
    """Write the class probabilities (K, H, W) as float16 to the compressed out_dir/<id>.npz (key 'probabilities')."""
    path = Path(out_dir, f"{case_id}.npz")
    np.savez_compressed(path, **{PROBABILITIES_KEY: probs.numpy().astype(np.float16)})
    return path


def read_probabilities(path) -> np.ndarray:
    """The (K, H, W) class probabilities written by `write_probabilities`, as float32."""
    with np.load(path) as arrays:
        return arrays[PROBABILITIES_KEY].astype(np.float32)


def checkpoint_list(paths: str | Sequence[str]) -> list[str]:
    """The checkpoint paths as a list (Snakemake passes a single-file input as a string)."""
    return [paths] if isinstance(paths, str) else list(paths)
