"""Ensembles: trained models loaded for inference, and a preprocessed image turned into class probabilities (tiled
sliding window, optional mirroring, mean softmax over the models) and postprocessed labels.

An ensemble may hold 2D and 3D U-Nets, each predicting with its own training patch: a 3D model sees a NIfTI volume
as one (its slices stacked in slice order along a new first spatial axis, (C, S, H, W), resampled along that axis
to the target spacing it was trained on and its softmax brought back), a 2D model slice by slice, and their softmax
is averaged on the volume's stored grid; the result is handed on slice by slice, as for 2D models."""

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from unetflow.gpu import uses_bf16
from unetflow.infer.tiling import prepare_for_inference, sliding_window_predict, spatial_dims
from unetflow.io.resample import resample_image, resample_probabilities, source_slice_shape
from unetflow.io.volumes import is_volume_unit, stack_slices, target_slice_count
from unetflow.train.model import UNet


def load_model(checkpoint_path: str, device: torch.device) -> tuple[UNet, list[int]]:
    """The model of a checkpoint written by training, in eval mode, and its training patch size."""
    checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
    return model_from_weights(checkpoint["hparams"], checkpoint["model"], device), checkpoint["patch_size"]


def model_from_weights(hparams: dict, weights: dict, device: torch.device) -> UNet:
    """A U-Net with `hparams` and `weights`, prepared for inference on `device`."""
    model = UNet(**hparams)
    model.load_state_dict(weights)
    return prepare_for_inference(model, device)


def load_models(checkpoint_paths: Sequence[str], device: torch.device) -> tuple[list[UNet], list[list[int]]]:
    """The models of several checkpoints and the training patch size of each; ValueError when models of the same
    dimensionality (2D or 3D) were trained with different patch sizes."""
    loaded = [load_model(path, device) for path in checkpoint_paths]
    refuse_different_patches(checkpoint_paths, [spatial_dims(model) for model, _ in loaded],
                             [patch for _, patch in loaded])
    return [model for model, _ in loaded], [list(patch) for _, patch in loaded]


def refuse_different_patches(checkpoint_paths: Sequence[str], dims: Sequence[int], patches: Sequence) -> None:
    """ValueError when models of the same dimensionality (`dims`, one per checkpoint) have different patches."""
    for dim in sorted(set(dims)):
        found = {tuple(patch) for patch, model_dims in zip(patches, dims) if model_dims == dim}
        if len(found) != 1:
            raise ValueError(f"the checkpoints {list(checkpoint_paths)} hold {dim}D models trained with different "
                             f"patch sizes {sorted(found)}; ensemble models trained with the same train.patch_size")


def refuse_3d_models_on_2d_units(models: Sequence[torch.nn.Module], model_names: Sequence[str],
                                 units: list[tuple[str, pd.DataFrame]]) -> None:
    """ValueError naming the 3D models and the 2D images (2D files, TIFF stack pages) among the prediction units
    when both occur: a 3D model segments NIfTI volumes only."""
    three_d = [str(name) for model, name in zip(models, model_names) if spatial_dims(model) == 3]
    flat = [name for name, rows in units if not is_volume_unit(rows)]
    if three_d and flat:
        raise ValueError(f"{', '.join(three_d)}: 3D model(s) segment NIfTI volumes only, but {len(flat)} of the "
                         f"images to predict are 2D images or TIFF stack pages ({', '.join(flat[:5])}"
                         f"{', ...' if len(flat) > 5 else ''}); predict them with a 2D model (train.dims: 2)")


def member_patches(models: Sequence[torch.nn.Module], patch) -> list[list[int]]:
    """One tile size per model: `patch` for every model when it is one patch (a list of sizes), else its entries
    in model order (an ensemble of 2D and 3D models)."""
    if all(isinstance(size, (int, np.integer)) for size in patch):
        return [list(patch)] * len(models)
    return [list(member) for member in patch]


def predict_probabilities(models: Sequence[torch.nn.Module], image: np.ndarray, patch, cfg: dict,
                          device: torch.device) -> torch.Tensor:
    """Softmax (K, H, W) or (K, S, H, W), float32 on the CPU, of one preprocessed image (C, H, W) or volume
    (C, S, H, W), averaged over `models`; each model's by tiled sliding-window inference with its patch (`patch`:
    one for all or one per model; see `model_probabilities`). cfg: overlap, batch_size, mirror, precision (a model
    package written before predict.precision existed has none and gets 'auto')."""
    tensor = torch.from_numpy(image)
    total = None
    for model, model_patch in zip(models, member_patches(models, patch)):
        probs = model_probabilities(model, tensor, model_patch, cfg, device)
        total = probs if total is None else total.add_(probs)
    return total.div_(len(models))


def model_probabilities(model: torch.nn.Module, image: torch.Tensor, patch: Sequence[int], cfg: dict,
                        device: torch.device) -> torch.Tensor:
    """One model's softmax of an image (C, H, W) or volume (C, S, H, W): a 2D model on each slice of a volume,
    mirrored (cfg['mirror']) along every spatial axis it sees; ValueError for a 2D image and a 3D model."""
    dims = spatial_dims(model)
    if image.ndim == 4 and dims == 2:
        return torch.stack([model_probabilities(model, image[:, s], patch, cfg, device)
                            for s in range(image.shape[1])], dim=1)
    if image.ndim - 1 != dims:
        raise ValueError(f"a 3D model predicts volumes (C, S, H, W), not a 2D image of shape {tuple(image.shape)}")
    return sliding_window_predict(model, image, tuple(patch), overlap=cfg["overlap"], batch_size=cfg["batch_size"],
                                  mirror_axes=tuple(range(dims)) if cfg["mirror"] else (), device=device,
                                  bf16=uses_bf16(cfg.get("precision", "auto"), device))


def unit_probabilities(models: Sequence[torch.nn.Module], images: list[np.ndarray], patch, cfg: dict,
                       device: torch.device, rows: pd.DataFrame, target_spacing=None) -> list[torch.Tensor]:
    """The softmax of each preprocessed image (C, H, W) of a prediction unit (`rows`, see `prediction_units`):
    image by image with 2D models only; with a 3D model, a NIfTI volume's slices stacked in slice order as one
    volume (C, S, H, W), on `target_spacing` along the slice axis (X, Y, Z, see `slice_axis_target`; None: as
    stored), its softmax handed back slice by slice. ValueError for a 3D model on a 2D unit."""
    if not any(spatial_dims(model) == 3 for model in models):
        return [predict_probabilities(models, image, patch, cfg, device) for image in images]
    if not is_volume_unit(rows):
        first = rows.iloc[0]
        raise ValueError(f"{first.get('image_path', first['id'])}: a 2D image, but a 3D model segments NIfTI "
                         f"volumes only; predict it with a 2D model (train.dims: 2)")
    volume, slices = np.stack(images, axis=1), target_slice_count(rows, target_spacing)
    if slices == len(images):
        return list(predict_probabilities(models, volume, patch, cfg, device).unbind(1))
    return list(resampled_volume_probabilities(models, volume, slices, patch, cfg, device).unbind(1))


def resampled_volume_probabilities(models: Sequence[torch.nn.Module], volume: np.ndarray, slices: int, patch,
                                   cfg: dict, device: torch.device) -> torch.Tensor:
    """The mean softmax (K, S, H, W) of a volume (C, S, H, W) whose 3D models were trained on `slices` slices: the
    3D models on the volume resampled along the slice axis (cubic spline, as in training), their softmax brought
    back to its S slices (linear, still summing to 1); the 2D models on its stored slices; the mean of all."""
    patches = member_patches(models, patch)
    deep, flat = ([(model, model_patch) for model, model_patch in zip(models, patches) if spatial_dims(model) == dims]
                  for dims in (3, 2))
    resampled = resample_image(volume, (slices, *volume.shape[2:])).astype(volume.dtype)  # float16 as in training
    total = predict_probabilities([m for m, _ in deep], resampled, [p for _, p in deep], cfg, device).mul_(len(deep))
    total = torch.from_numpy(resample_probabilities(total.numpy(), volume.shape[1:]))
    if flat:
        total.add_(predict_probabilities([m for m, _ in flat], volume, [p for _, p in flat], cfg, device)
                   .mul_(len(flat)))
    return total.div_(len(models))


def labels_from_probabilities(probs: torch.Tensor) -> np.ndarray:
    """Class-index map (H, W) uint8: the argmax over classes."""
    return probs.argmax(0).numpy().astype(np.uint8)


def on_source_grid(probabilities: list[torch.Tensor], rows: pd.DataFrame) -> list[torch.Tensor]:
    """The class probabilities (K, H', W') of each slice of a prediction unit on the grid of its source file (a
    volume resampled or an image scaled in preprocessing); unchanged for images kept as stored."""
    shape = source_slice_shape(rows)
    if tuple(probabilities[0].shape[1:]) == shape:
        return probabilities
    return [torch.from_numpy(resample_probabilities(probs.numpy(), shape)) for probs in probabilities]


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


def predict_unit(models: Sequence[torch.nn.Module], images: list[np.ndarray], patch, cfg: dict,
                 device: torch.device, num_classes: int, rows: pd.DataFrame, target_spacing=None):
    """Class-index maps of a prediction unit's preprocessed images (one for a 2D case, the slices of a volume),
    postprocessed (cfg: overlap, batch_size, mirror, largest_component), and the probabilities of each image
    (see `unit_probabilities`; `patch`: one for all models or one per model; `target_spacing`: that 3D models were
    trained on); a volume resampled in preprocessing gets both on its file's own grid."""
    probabilities = on_source_grid(unit_probabilities(models, images, patch, cfg, device, rows, target_spacing),
                                   rows)
    labels = [labels_from_probabilities(probs) for probs in probabilities]
    return postprocess_unit(labels, num_classes, rows, cfg["largest_component"]), probabilities
