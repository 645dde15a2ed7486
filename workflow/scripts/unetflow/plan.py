"""The training plan: every `train` setting left unset (null) is planned from a fingerprint of the training cases
(sizes, class frequencies, object sizes) and the device, with the reason for each value; a value set in the config
always wins. The plan is logged, stored beside the model (`train/fold<k>/plan.json`) and shown in the report.

2D cases carry no spacing: they are planned on their pixel grid.
"""

import numpy as np
import torch
from scipy import ndimage

from unetflow.gpu import free_memory_bytes
from unetflow.labels import IGNORE_INDEX

PLANNED_KEYS = ("patch_size", "depth", "base_width", "batch_size", "foreground_oversampling")
FINGERPRINT_CASES = 50  # at most this many training cases (seeded) are measured for object sizes
COARSEST_MAP = 8  # pool until the coarsest feature map would be smaller than this many pixels
MAX_DEPTH = 7
CPU_PATCH_SIDE = 256  # larger patches only slow a CPU step down, unless the objects need them
GPU_PATCH_SIDE = 1024  # on a GPU: the median image up to this side, as memory allows
RARE_CLASS_SHARE = 0.05  # a foreground class rarer than this raises foreground oversampling


def data_fingerprint(cases, seed: int = 0) -> dict:
    """Sizes, class frequencies (pixel share of each class) and object sizes (90th percentile of the equivalent
    diameters of the face-connected components of each foreground class) of training (image, labels) cases."""
    labels = [case_labels for _, case_labels in cases]
    counts = sum(np.bincount(lab[lab != IGNORE_INDEX].ravel(), minlength=256)[:256] for lab in labels)
    num_classes = int(np.flatnonzero(counts).max()) + 1 if counts.any() else 1
    sample = np.random.default_rng(seed).permutation(len(labels))[:FINGERPRINT_CASES]
    diameters = [2 * np.sqrt(np.bincount(components.ravel())[1:] / np.pi)
                 for index in sample for c in range(1, num_classes)
                 for components in [ndimage.label(labels[index] == c)[0]] if components.any()]
    diameters = np.concatenate(diameters) if diameters else np.zeros(1)
    return dict(cases=len(labels), median_size=[int(np.median([lab.shape[a] for lab in labels])) for a in (0, 1)],
                class_shares=(counts[:num_classes] / max(1, counts.sum())).round(4).tolist(),
                object_diameter_p90=round(float(np.percentile(diameters, 90)), 1))


def training_bytes_per_sample(patch: list[int], depth: int, base_width: int) -> int:
    """Rough activation memory of one sample in a training step: ~16 float32 maps of each level's width kept for
    the backward pass (two conv blocks of conv, norm and ReLU in the encoder and decoder, skips, up-convolutions)."""
    pixels = patch[0] * patch[1]
    return sum(16 * 4 * base_width * 2**level * pixels // 4**level for level in range(depth + 1))


def plan_batch_size(patch: list[int], depth: int, base_width: int, device: torch.device) -> int:
    """Largest batch whose activations fill at most a third of the free memory, from 2 to 8 on the CPU (more
    does not train faster there) or to 64 on a GPU."""
    fits = free_memory_bytes(device) // 3 // training_bytes_per_sample(patch, depth, base_width)
    return int(min(max(2, fits), 64 if device.type == "cuda" else 8))


def plan_patch_size(heights: list[int], widths: list[int], depth: int, largest: int = CPU_PATCH_SIDE) -> list[int]:
    """Patch size from the median image size, at most `largest`, rounded down to a multiple of 2**depth."""
    multiple = 2**depth
    return [max(multiple, min(int(np.median(sizes)), largest) // multiple * multiple) for sizes in (heights, widths)]


def patch_side_limit(traits: dict, device: torch.device, base_width: int) -> tuple[int, str]:
    """The largest patch side for this device and why: on the CPU 256, or twice the typical large object when that
    is more; on a GPU up to 1024, as long as a batch of 2 fits in a third of the free memory."""
    need = int(2 * traits["object_diameter_p90"])
    if device.type != "cuda":
        side = max(CPU_PATCH_SIDE, need)
        return side, (f"CPU: at most {CPU_PATCH_SIDE}" if side == CPU_PATCH_SIDE
                      else f"twice the 90th-percentile object diameter ({traits['object_diameter_p90']:g} px)")
    side = GPU_PATCH_SIDE
    while side > 64 and 2 * training_bytes_per_sample([side, side], 5, base_width) > free_memory_bytes(device) // 3:
        side //= 2
    return side, f"GPU: up to {GPU_PATCH_SIDE} as its free memory allows a batch of 2"


def depth_for(sides: list[int], limit_by_divisibility: bool) -> int:
    """Poolings until the coarsest map of the smaller side would fall under COARSEST_MAP pixels (at least 1, at
    most MAX_DEPTH); with `limit_by_divisibility`, also no more than each side's factors of 2 allow."""
    depth = 1
    while depth < MAX_DEPTH and min(sides) // 2 ** (depth + 1) >= COARSEST_MAP:
        if limit_by_divisibility and any(side % 2 ** (depth + 1) for side in sides):
            break
        depth += 1
    return depth


def plan_training(cfg: dict, traits: dict, device: torch.device) -> tuple[dict, dict]:
    """The `train` settings with every planned key filled (explicit values kept), and the reason for each."""
    reasons = {}
    base_width = cfg["base_width"]
    if base_width is None:
        base_width = 32 if device.type == "cuda" else 16
        reasons["base_width"] = f"{'GPU' if device.type == 'cuda' else 'CPU'} default"
    patch, depth = cfg["patch_size"], cfg["depth"]
    if patch is None:
        limit, why = patch_side_limit(traits, device, base_width)
        wanted = [min(size, limit) for size in traits["median_size"]]
        depth = depth if depth is not None else depth_for(wanted, limit_by_divisibility=False)
        patch = plan_patch_size(*[[side] for side in wanted], depth, largest=limit)
        reasons["patch_size"] = f"median image {traits['median_size']}, {why}, a multiple of 2**depth"
    elif depth is None:
        depth = depth_for(patch, limit_by_divisibility=True)
    if cfg["depth"] is None:
        coarsest = min(patch) // 2**depth
        reasons["depth"] = f"pooled until the coarsest map of the {min(patch)}-pixel side is {coarsest} px"
    batch = cfg["batch_size"] or plan_batch_size(patch, depth, base_width, device)
    if not cfg["batch_size"]:
        reasons["batch_size"] = f"activations in a third of the free {device.type} memory, capped for the device"
    oversampling = cfg["foreground_oversampling"]
    if oversampling is None:
        rarest = min(traits["class_shares"][1:], default=1.0)
        oversampling = 0.5 if rarest < RARE_CLASS_SHARE else 0.33
        reasons["foreground_oversampling"] = (f"rarest foreground class {rarest:.1%} of the pixels"
                                              + (f" < {RARE_CLASS_SHARE:.0%}" if oversampling == 0.5 else
                                                 "; nnU-Net's 0.33"))
    planned = dict(cfg, patch_size=list(patch), depth=depth, base_width=base_width, batch_size=batch,
                   foreground_oversampling=oversampling)
    return planned, reasons


def plan_record(planned: dict, reasons: dict, traits: dict, device: torch.device) -> dict:
    """What plan.json holds: the device, the fingerprint, and each planned key's value, source and reason."""
    return dict(device=str(device), fingerprint=traits,
                settings={key: dict(value=planned[key], source="planned" if key in reasons else "config",
                                    reason=reasons.get(key, "set in the config")) for key in PLANNED_KEYS})
