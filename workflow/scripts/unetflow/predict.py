"""Prediction: load a trained model and write label masks in the input's geometry and encoding."""

from pathlib import Path

import numpy as np
import torch

from unetflow.io import write_mask
from unetflow.model import UNet
from unetflow.tiling import sliding_window_predict


def load_model(checkpoint_path: str, device: torch.device) -> tuple[UNet, list[int]]:
    """The model of a checkpoint written by training, in eval mode, and its training patch size."""
    checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
    model = UNet(**checkpoint["hparams"]).to(device)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint["patch_size"]


def predict_labels(model: UNet, image: np.ndarray, patch: list[int], cfg: dict, device: torch.device) -> np.ndarray:
    """Class-index map (H, W) of one preprocessed image (C, H, W), by tiled sliding-window inference."""
    mirror_axes = (0, 1) if cfg["mirror"] else ()
    probs = sliding_window_predict(model, torch.from_numpy(image), tuple(patch), overlap=cfg["overlap"],
                                   batch_size=cfg["batch_size"], mirror_axes=mirror_axes, device=device)
    return probs.argmax(0).numpy().astype(np.uint8)


def write_prediction(labels: np.ndarray, values: list[int], out_dir: str, case_id: str) -> Path:
    """Write class indices as the stored class values (0/255 stays 0/255) to out_dir/<id>.png."""
    path = Path(out_dir, f"{case_id}.png")
    write_mask(path, np.asarray(values)[labels])
    return path
