"""Ensembles: trained models loaded for inference, and a preprocessed image turned into class probabilities (tiled
sliding window, optional mirroring, mean softmax over the models) and postprocessed labels."""

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from unetflow.gpu import uses_bf16
from unetflow.model import UNet
from unetflow.tiling import prepare_for_inference, sliding_window_predict
from unetflow.volumes import is_volume_unit, stack_slices


def load_model(checkpoint_path: str, device: torch.device) -> tuple[UNet, list[int]]:
    """The model of a checkpoint written by training, in eval mode, and its training patch size."""
    checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
    return model_from_weights(checkpoint["hparams"], checkpoint["model"], device), checkpoint["patch_size"]


def model_from_weights(hparams: dict, weights: dict, device: torch.device) -> UNet:
    """A U-Net with `hparams` and `weights`, prepared for inference on `device`."""
    model = UNet(**hparams)
    model.load_state_dict(weights)
    return prepare_for_inference(model, device)


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
    model's by tiled sliding-window inference (cfg: overlap, batch_size, mirror, precision; a model package written
    before predict.precision existed has none and gets 'auto')."""
    mirror_axes = (0, 1) if cfg["mirror"] else ()
    tensor = torch.from_numpy(image)
    total = None
    for model in models:
        probs = sliding_window_predict(model, tensor, tuple(patch), overlap=cfg["overlap"],
                                       batch_size=cfg["batch_size"], mirror_axes=mirror_axes, device=device,
                                       bf16=uses_bf16(cfg.get("precision", "auto"), device))
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


def predict_unit(models: Sequence[torch.nn.Module], images: list[np.ndarray], patch: Sequence[int], cfg: dict,
                 device: torch.device, num_classes: int, rows: pd.DataFrame):
    """Class-index maps of a prediction unit's preprocessed images (one for a 2D case, the slices of a volume),
    postprocessed (cfg: overlap, batch_size, mirror, largest_component), and the probabilities of each image."""
    probabilities = [predict_probabilities(models, image, patch, cfg, device) for image in images]
    labels = [labels_from_probabilities(probs) for probs in probabilities]
    return postprocess_unit(labels, num_classes, rows, cfg["largest_component"]), probabilities
