"""The training plan: every `train` setting left unset (null) is planned from traits of the training cases
(`training_traits`: sizes, class frequencies, object sizes) and the device, with the reason for each value; a value
set in the config always wins. The plan is logged, stored beside the model (`train/fold<k>/plan.json`) and shown in
the report.

2D cases carry no spacing: they are planned on their pixel grid. Volumes trained in 3D (`train.dims`, chosen in
unetflow.train.volume_training) are planned from their median shape and voxel spacing as nnU-Net plans its 3d_fullres
configuration: a patch of the median volume's shape shrunk along its physically longest axis until it fits the
device, pooling only along axes that are not already coarse (`model.pool_kernels_for`), batch 2 on a CPU.
"""

import math

import numpy as np
import torch
from scipy import ndimage

from unetflow.gpu import free_memory_bytes
from unetflow.io.labels import IGNORE_INDEX
from unetflow.train.model import pool_kernels_for

PLANNED_KEYS = ("dims", "patch_size", "depth", "pool_kernels", "base_width", "batch_size", "foreground_oversampling")
TRAITS_CASES = 50  # at most this many training cases (seeded) are measured for object sizes
COARSEST_MAP = 8  # pool until the coarsest feature map would be smaller than this many pixels
MAX_DEPTH = 7
CPU_PATCH_SIDE = 256  # larger patches only slow a CPU step down, unless the objects need them
GPU_PATCH_SIDE = 1024  # on a GPU: the median image up to this side, as memory allows
RARE_CLASS_SHARE = 0.05  # a foreground class rarer than this raises foreground oversampling
CPU_PATCH_VOXELS_3D = 64**3  # a 3D step of batch 2 takes seconds on a 2-core CPU at this size (bf16, width 16)
CPU_PATCH_SIDE_3D = 96
GPU_PATCH_SIDE_3D = 256
CPU_BATCH_3D = 2  # nnU-Net's 3D batch; a CPU gains nothing from more
CPU_BATCH_2D = 4  # a CPU step costs the same per image at any batch, so a smaller one takes more steps in a budget


def training_traits(cases, seed: int = 0, spacing: list[float] | None = None) -> dict:
    """Sizes, class frequencies (pixel share of each class) and object sizes (90th percentile of the equivalent
    diameters of the face-connected components of each foreground class, in pixels or voxels) of training (image,
    labels) cases, 2D or 3D; with `spacing` (the volumes' median voxel size), that too."""
    labels = [case[1] for case in cases]
    counts = sum(np.bincount(lab[lab != IGNORE_INDEX].ravel(), minlength=256)[:256] for lab in labels)
    num_classes = int(np.flatnonzero(counts).max()) + 1 if counts.any() else 1
    sample = np.random.default_rng(seed).permutation(len(labels))[:TRAITS_CASES]
    diameters = [equivalent_diameters(np.bincount(components.ravel())[1:], components.ndim)
                 for index in sample for c in range(1, num_classes)
                 for components in [ndimage.label(labels[index] == c)[0]] if components.any()]
    diameters = np.concatenate(diameters) if diameters else np.zeros(1)
    traits = dict(cases=len(labels),
                  median_size=[int(np.median([lab.shape[a] for lab in labels])) for a in range(labels[0].ndim)],
                  class_shares=(counts[:num_classes] / max(1, counts.sum())).round(4).tolist(),
                  object_diameter_p90=round(float(np.percentile(diameters, 90)), 1))
    return traits if spacing is None else dict(traits, spacing=[round(float(s), 4) for s in spacing])


def equivalent_diameters(sizes: np.ndarray, ndim: int) -> np.ndarray:
    """Diameters of the disks (2D) or balls (3D) of the given pixel or voxel counts."""
    return 2 * np.sqrt(sizes / np.pi) if ndim == 2 else np.cbrt(6 * sizes / np.pi)


def training_bytes_per_sample(patch: list[int], depth: int, base_width: int, pool_kernels=None) -> int:
    """Rough activation memory of one sample in a training step: ~16 float32 maps of each level's width kept for
    the backward pass (two conv blocks of conv, norm and ReLU in the encoder and decoder, skips, up-convolutions);
    each level's map is the patch divided by the pooling strides so far (None: 2 along every axis)."""
    kernels = pool_kernels or [[2] * len(patch)] * depth
    shrink = [math.prod(math.prod(level) for level in kernels[:level]) for level in range(depth + 1)]
    return sum(16 * 4 * base_width * 2**level * math.prod(patch) // shrink[level] for level in range(depth + 1))


def plan_batch_size(patch: list[int], depth: int, base_width: int, device: torch.device, pool_kernels=None) -> int:
    """Largest batch whose activations fill at most a third of the free memory, from 2 to CPU_BATCH_2D on the CPU
    (CPU_BATCH_3D for 3D patches: a larger batch trains no more images per second there, only fewer steps) or to 64
    on a GPU."""
    fits = free_memory_bytes(device) // 3 // training_bytes_per_sample(patch, depth, base_width, pool_kernels)
    cap = 64 if device.type == "cuda" else CPU_BATCH_3D if len(patch) == 3 else CPU_BATCH_2D
    return int(min(max(2, fits), cap))


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


def plan_training(cfg: dict, traits: dict, device: torch.device, dims_reason: str | None = None) -> tuple[dict, dict]:
    """The `train` settings with every planned key filled (explicit values kept), and the reason for each. The
    cases' dimensionality (`traits["median_size"]`: 2 or 3 sides) is the U-Net's `dims`; `dims_reason` says why
    `train.dims: auto` chose it."""
    dims = len(traits["median_size"])
    reasons = {} if cfg.get("dims", "auto") != "auto" else {"dims": dims_reason or f"the training cases are {dims}D"}
    base_width = cfg["base_width"]
    if base_width is None:
        base_width = 32 if device.type == "cuda" else 16
        reasons["base_width"] = f"{'GPU' if device.type == 'cuda' else 'CPU'} default"
    if cfg["patch_size"] is not None and len(cfg["patch_size"]) != dims:
        raise ValueError(f"config key train.patch_size {cfg['patch_size']} has {len(cfg['patch_size'])} sides but "
                         f"the U-Net is {dims}D (train.dims {cfg.get('dims', 'auto')}); give {dims} sides or null")
    plan_geometry = plan_volume_geometry if dims == 3 else plan_image_geometry
    patch, depth, kernels = plan_geometry(cfg, traits, device, base_width, reasons)
    batch = cfg["batch_size"] or plan_batch_size(patch, depth, base_width, device, kernels)
    if not cfg["batch_size"]:
        reasons["batch_size"] = f"activations in a third of the free {device.type} memory, capped for the device"
    oversampling = cfg["foreground_oversampling"]
    if oversampling is None:
        rarest = min(traits["class_shares"][1:], default=1.0)
        oversampling = 0.5 if rarest < RARE_CLASS_SHARE else 0.33
        reasons["foreground_oversampling"] = (f"rarest foreground class {rarest:.1%} of the pixels"
                                              + (f" < {RARE_CLASS_SHARE:.0%}" if oversampling == 0.5 else
                                                 "; nnU-Net's 0.33"))
    planned = dict(cfg, dims=dims, patch_size=list(patch), depth=depth, pool_kernels=kernels, base_width=base_width,
                   batch_size=batch, foreground_oversampling=oversampling)
    return planned, reasons


def plan_image_geometry(cfg: dict, traits: dict, device: torch.device, base_width: int, reasons: dict):
    """Patch size and depth of a 2D U-Net (pooling 2x2 at every level: no pool kernels), their reasons added."""
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
    reasons["pool_kernels"] = "2D: 2x2 pooling at every level"
    return patch, depth, None


def plan_volume_geometry(cfg: dict, traits: dict, device: torch.device, base_width: int, reasons: dict):
    """Patch size, depth and per-level pooling strides of a 3D U-Net from the median volume shape and spacing (axes
    in the order of the volume arrays: slices first), their reasons added."""
    spacing = traits.get("spacing") or [1.0, 1.0, 1.0]
    patch, depth = cfg["patch_size"], cfg["depth"]
    if patch is None:
        patch, why = volume_patch(traits["median_size"], spacing, device, base_width)
    if depth is None:
        depth = depth_for([max(patch)], limit_by_divisibility=False)
        reasons["depth"] = (f"pooled until the coarsest map of the {max(patch)}-voxel side is "
                            f"{max(patch) // 2**depth} voxels")
    kernels = [list(level) for level in pool_kernels_for(spacing, patch, depth)]
    if cfg["patch_size"] is None:
        multiples = [math.prod(axis) for axis in zip(*kernels)] if kernels else [1, 1, 1]
        patch = [max(m, side // m * m) for side, m in zip(patch, multiples)]
        reasons["patch_size"] = (f"median volume {traits['median_size']} at spacing {spacing}, {why}; each side a "
                                 f"multiple of its pooling")
    reasons["pool_kernels"] = (f"spacing {spacing}: an axis pools only while its spacing is at most twice the finest "
                               f"and its map stays at least 4 voxels (nnU-Net)")
    return patch, depth, kernels


def volume_patch(median: list[int], spacing: list[float], device: torch.device, base_width: int):
    """The median volume's shape, at most a side limit per axis, shrunk along its physically longest axis (size
    times spacing) until it fits the device (`volume_patch_fits`). Returns the patch and why."""
    limit = GPU_PATCH_SIDE_3D if device.type == "cuda" else CPU_PATCH_SIDE_3D
    patch = [min(n, limit) for n in median]
    while not volume_patch_fits(patch, device, base_width) and max(patch) > 8:
        longest = max((n * s, axis) for axis, (n, s) in enumerate(zip(patch, spacing)) if n > 8)[1]
        patch[longest] -= max(1, patch[longest] // 8)
    if device.type == "cuda":
        return patch, f"GPU: at most {limit} a side, a batch of 2 in a third of its free memory"
    return patch, f"CPU: at most {limit} a side and {CPU_PATCH_VOXELS_3D} voxels"


def volume_patch_fits(patch: list[int], device: torch.device, base_width: int) -> bool:
    """Whether a 3D patch suits the device: CPU_PATCH_VOXELS_3D voxels on a CPU, a batch of 2 (depth 5) in a third
    of a GPU's free memory."""
    if device.type == "cuda":
        return 2 * training_bytes_per_sample(patch, 5, base_width) <= free_memory_bytes(device) // 3
    return math.prod(patch) <= CPU_PATCH_VOXELS_3D


def plan_record(planned: dict, reasons: dict, traits: dict, device: torch.device, parameters: int) -> dict:
    """What plan.json holds: the device, the `training_traits` (key fingerprint), the U-Net's trained `parameters`
    (for the leaderboard) and each planned key's value, source and reason."""
    return dict(device=str(device), fingerprint=traits, parameters=parameters,
                settings={key: dict(value=planned[key], source="planned" if key in reasons else "config",
                                    reason=reasons.get(key, "set in the config")) for key in PLANNED_KEYS})
