"""The training plan of an experiment, made once (rule `plan`) and read by every fold's training, the model package,
prediction and the leaderboard: every `train` setting left unset (null or auto) is planned from the stored training
sources (all but the test split: every fold trains on the same plan), the data-set fingerprint, the device
training runs on and, for the resolution of 2D images, the budget (`unetflow.plan.resolution`), with the reason for each
value; a value set in the config always wins.

The device is the one the training jobs get (`train.device`; `auto` is a CUDA GPU when the plan job sees one, as
every job of the experiment runs where its training does). It is planned for a fixed memory target, not the memory
free at that moment: a CPU plan from fixed caps, a GPU plan from a third of the GPU's total memory; so a job that
resumes on a busier GPU trains the same plan.

2D cases carry no spacing: they are planned on their pixel grid. Volumes trained in 3D (`train.dims`) are planned from
their median shape and voxel spacing as nnU-Net plans its 3d_fullres configuration: a patch of the median volume's
shape shrunk along its physically longest axis until it fits the device, pooling only along axes that are not
already coarse (`unetflow.net.model.pool_kernels_for`), batch 2 on a CPU.
"""

import math

import numpy as np
import pandas as pd
import torch

from unetflow.data.folds import fold_ids, fold_numbers
from unetflow.net.model import UNet, pool_kernels_for, trained_parameters
from unetflow.plan.background import dominant_background
from unetflow.plan.resolution import no_resolution_choice, plan_resolution, resolution_trial, scaled_traits
from unetflow.train.schedule import training_budget
from unetflow.train.timing import step_seconds

PLANNED_KEYS = ("dims", "resolution", "patch_size", "depth", "pool_kernels", "base_width", "batch_size",
                "foreground_oversampling", "dice_background")
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
GPU_BATCH_CAP = 64
ANISOTROPY_RATIO = 3.0  # nnU-Net's threshold for an anisotropic spacing
FEW_SLICES = 32  # fewer voxels than this along the coarse axis of an anisotropic volume: train in 2D


class PlanError(ValueError):
    """A config setting the training data cannot be planned with; the message names the key."""


def plan_device(device: torch.device) -> dict:
    """What the plan is made for: the device type, its name and the memory planned against (a GPU's total memory;
    none for the CPU, planned from fixed caps)."""
    if device.type != "cuda":
        return dict(type=device.type, name=device.type, memory_bytes=None)
    properties = torch.cuda.get_device_properties(device)
    return dict(type="cuda", name=properties.name, memory_bytes=int(properties.total_memory))


def choose_dims(requested, sources: pd.DataFrame, patch_size: list[int] | None = None) -> tuple[int, str]:
    """The U-Net's dims for the stored training `sources` (kind, slices, height, width, spacing) and why: `requested`
    (2, 3 or 'auto', the value of train.dims; with 'auto', an explicit train.patch_size decides by its number of
    sides). ValueError naming train.dims when 3 is asked of data that is not all volumes of several slices."""
    sides = len(patch_size) if requested == "auto" and patch_size is not None else None
    if requested == 2 or sides == 2:
        return 2, "set in the config" if requested == 2 else "train.patch_size has 2 sides"
    setting = "train.dims is 3" if requested == 3 else "train.patch_size has 3 sides" if sides == 3 else None
    volumes = sources[(sources["kind"] == "volume") & (sources["slices"] > 1)]
    others = sources.loc[~sources.index.isin(volumes.index), "id"].tolist()
    if others or volumes.empty:
        what = f"{len(others)} 2D image(s), TIFF stack(s) or one-slice volume(s), e.g. {others[:3]}" if others else \
            "no sources"
        if setting:
            raise PlanError(f"config key {setting} but the training data holds {what}: a 3D U-Net trains on NIfTI "
                            f"volumes of several slices; set train.dims to 2 or auto (and a 2-sided patch size), or "
                            f"save TIFF stacks as NIfTI volumes with their voxel size (nibabel.Nifti1Image("
                            f"numpy.moveaxis(stack, 0, -1), numpy.diag([x, y, z, 1])) for a ZYX stack)")
        return 2, f"the training data holds {what}"
    if setting:
        return 3, "set in the config" if requested == 3 else setting
    spacing = np.median(np.stack(volumes["spacing"].tolist()), axis=0)
    shape = np.median(volumes[["slices", "height", "width"]].to_numpy(), axis=0)
    coarse, ratio = int(np.argmax(spacing)), float(spacing.max() / spacing.min())
    median = f"median spacing {spacing.round(4).tolist()}, median shape {shape.astype(int).tolist()}"
    if ratio > ANISOTROPY_RATIO and shape[coarse] < FEW_SLICES:
        return 2, (f"volumes too anisotropic for 3D ({median}: spacing ratio {ratio:.1f} > {ANISOTROPY_RATIO:g} "
                   f"and {shape[coarse]:g} < {FEW_SLICES} voxels along the coarse axis)")
    return 3, (f"NIfTI volumes, not extremely anisotropic ({median}: spacing ratio {ratio:.1f}; 2D only above "
               f"{ANISOTROPY_RATIO:g} with under {FEW_SLICES} voxels along the coarse axis)")


def training_traits(sources: pd.DataFrame, dims: int, fingerprint: dict) -> dict:
    """What the plan is made from, of the stored training `sources`: their number, the cases a `dims`-D U-Net sees
    (2D slices or volumes) and their median size, the pixel share of each class, the 90th percentile of the objects'
    in-plane diameters (the fingerprint's, on the stored grid); in 3D the median voxel spacing (array order); for 2D
    images the finest class's median distance to another class (the fingerprint's boundary_distance, on the stored
    grid) and the training pixels."""
    shapes = sources[["slices", "height", "width"]].to_numpy()
    if dims == 2:
        shapes = np.repeat(shapes[:, 1:], sources["slices"].to_numpy(), axis=0)
    counts = class_voxels(sources)
    shrink = float(np.median(sources["height"] / sources["original_height"]))
    traits = dict(sources=len(sources), cases=len(shapes), median_size=[int(s) for s in np.median(shapes, axis=0)],
                  class_shares=(counts / max(1, counts.sum())).round(4).tolist(),
                  object_diameter_p90=round(fingerprint["object_diameter_p90"] * shrink, 1))
    if dims == 3:
        traits["spacing"] = [round(float(s), 4) for s in np.median(np.stack(sources["spacing"].tolist()), axis=0)]
    elif fingerprint.get("boundary_distance") is not None:
        traits["boundary_distance"] = round(fingerprint["boundary_distance"] * shrink, 2)
        traits["pixels"] = int(shapes.prod(axis=1).sum())
    if fingerprint.get("slides"):
        traits["slides"] = True  # regions of whole-slide images: trained at their pixel size
    return traits


def class_voxels(sources: pd.DataFrame) -> np.ndarray:
    """The voxels of each class (index order) in the stored `sources`."""
    return np.sum(np.stack(sources["class_voxels"].map(np.asarray).tolist()), axis=0)


def unseen_classes(names: list[str], sources: pd.DataFrame) -> list[str]:
    """The classes (`names` in index order) without a pixel in the stored training `sources`: the network cannot
    learn them."""
    return [name for name, count in zip(names, class_voxels(sources)) if count == 0]


def unseen_class_problem(names: list[str], stored: pd.DataFrame, splits: pd.DataFrame) -> str | None:
    """The refusal of classes (`names` in index order) without a pixel in the training cases of a fold (`stored`: the
    stored sources; `splits`: the split table), naming the validation or test cases that have them; None when every
    fold trains on every class."""
    folds = fold_numbers(splits)
    for fold in folds:
        train_ids, val_ids = fold_ids(splits, fold)
        if unseen := unseen_classes(names, stored[stored["id"].isin(train_ids)]):
            holders = [case for case in class_holders(stored, [names.index(name) for name in unseen])
                       if case not in train_ids]
            shown = ", ".join(f"{case} ({'val' if case in val_ids else 'test'})" for case in holders[:5]) + (
                ", ..." if len(holders) > 5 else "")
            of_fold = f" of fold {fold}" if len(folds) > 1 else ""
            return (f"class(es) {unseen} have no pixel in the training cases{of_fold}, only in {shown}: the network "
                    f"cannot learn them, and validation and the test split would score them. If the value is an "
                    f"annotation slip, clean those masks; if it is a class, put a case that has it in training "
                    f"(split.fixed with a manifest's split column, or another split.seed)")
    return None


def class_holders(stored: pd.DataFrame, indices: list[int]) -> list[str]:
    """The ids of the stored sources with a pixel of any of the class `indices`."""
    return stored.loc[stored["class_voxels"].map(lambda counts: any(counts[i] for i in indices)), "id"].tolist()


def training_bytes_per_sample(patch: list[int], depth: int, base_width: int, pool_kernels=None) -> int:
    """Rough activation memory of one sample in a training step: ~16 float32 maps of each level's width kept for
    the backward pass (two conv blocks of conv, norm and ReLU in the encoder and decoder, skips, up-convolutions);
    each level's map is the patch divided by the pooling strides so far (None: 2 along every axis)."""
    kernels = pool_kernels or [[2] * len(patch)] * depth
    shrink = [math.prod(math.prod(level) for level in kernels[:level]) for level in range(depth + 1)]
    return sum(16 * 4 * base_width * 2**level * math.prod(patch) // shrink[level] for level in range(depth + 1))


def plan_batch_size(patch: list[int], depth: int, base_width: int, device: dict, pool_kernels=None) -> int:
    """On a CPU CPU_BATCH_2D (CPU_BATCH_3D for 3D patches: a larger batch trains no more images per second there,
    only fewer steps); on a GPU the largest batch from 2 to GPU_BATCH_CAP whose activations fill at most a third of
    its memory."""
    if device["type"] != "cuda":
        return CPU_BATCH_3D if len(patch) == 3 else CPU_BATCH_2D
    fits = device["memory_bytes"] // 3 // training_bytes_per_sample(patch, depth, base_width, pool_kernels)
    return int(min(max(2, fits), GPU_BATCH_CAP))


def plan_patch_size(heights: list[int], widths: list[int], depth: int, largest: int = CPU_PATCH_SIDE) -> list[int]:
    """Patch size from the median image size, at most `largest`, rounded down to a multiple of 2**depth."""
    multiple = 2**depth
    return [max(multiple, min(int(np.median(sizes)), largest) // multiple * multiple) for sizes in (heights, widths)]


def fits_gpu(patch: list[int], depth: int, base_width: int, device: dict) -> bool:
    """Whether a batch of 2 of `patch` (pooled `depth` times) fits in a third of the GPU's memory."""
    return 2 * training_bytes_per_sample(patch, depth, base_width) <= device["memory_bytes"] // 3


def patch_side_limit(traits: dict, device: dict, base_width: int) -> tuple[int, str]:
    """The largest patch side for this device and why: on the CPU 256, or twice the typical large object when that
    is more; on a GPU up to 1024, as long as a batch of 2 fits in a third of its memory."""
    need = int(2 * traits["object_diameter_p90"])
    if device["type"] != "cuda":
        side = max(CPU_PATCH_SIDE, need)
        return side, (f"CPU: at most {CPU_PATCH_SIDE}" if side == CPU_PATCH_SIDE
                      else f"twice the 90th-percentile object diameter ({traits['object_diameter_p90']:g} px)")
    side = GPU_PATCH_SIDE
    while side > 64 and not fits_gpu([side, side], 5, base_width, device):
        side //= 2
    return side, f"GPU: up to {GPU_PATCH_SIDE} as a batch of 2 fits in a third of its memory"


def depth_for(sides: list[int], limit_by_divisibility: bool) -> int:
    """Poolings until the coarsest map of the smaller side would fall under COARSEST_MAP pixels (at least 1, at
    most MAX_DEPTH); with `limit_by_divisibility`, also no more than each side's factors of 2 allow."""
    depth = 1
    while depth < MAX_DEPTH and min(sides) // 2 ** (depth + 1) >= COARSEST_MAP:
        if limit_by_divisibility and any(side % 2 ** (depth + 1) for side in sides):
            break
        depth += 1
    return depth


def plan_image_geometry(cfg: dict, traits: dict, device: dict, base_width: int, reasons: dict):
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


def plan_volume_geometry(cfg: dict, traits: dict, device: dict, base_width: int, reasons: dict):
    """Patch size, depth and per-level pooling strides of a 3D U-Net from the median volume shape and spacing (axes
    in array order: slices first), their reasons added."""
    spacing = traits["spacing"]
    patch, depth = cfg["patch_size"], cfg["depth"]
    if patch is None:
        patch, why = volume_patch(traits["median_size"], spacing, device, base_width)
    if depth is None:
        depth = depth_for([max(patch)], limit_by_divisibility=False)
        reasons["depth"] = (f"pooled until the coarsest map of the {max(patch)}-voxel side is "
                            f"{max(patch) // 2**depth} voxels")
    kernels = cfg.get("pool_kernels") or [list(level) for level in pool_kernels_for(spacing, patch, depth)]
    if cfg["patch_size"] is None:
        multiples = [math.prod(axis) for axis in zip(*kernels)] if kernels else [1, 1, 1]
        patch = [max(m, side // m * m) for side, m in zip(patch, multiples)]
        reasons["patch_size"] = (f"median volume {traits['median_size']} at spacing {spacing}, {why}; each side a "
                                 f"multiple of its pooling")
    reasons["pool_kernels"] = (f"spacing {spacing}: an axis pools only while its spacing is at most twice the finest "
                               f"and its map stays at least 4 voxels (nnU-Net)")
    return patch, depth, kernels


def volume_patch(median: list[int], spacing: list[float], device: dict, base_width: int):
    """The median volume's shape, at most a side limit per axis, shrunk along its physically longest axis (size
    times spacing) until it fits the device (CPU_PATCH_VOXELS_3D voxels on a CPU, a batch of 2 (depth 5) in a third
    of a GPU's memory). Returns the patch and why."""
    cuda = device["type"] == "cuda"
    limit = GPU_PATCH_SIDE_3D if cuda else CPU_PATCH_SIDE_3D
    patch = [min(n, limit) for n in median]

    def fits(candidate):
        return fits_gpu(candidate, 5, base_width, device) if cuda else math.prod(candidate) <= CPU_PATCH_VOXELS_3D

    while not fits(patch) and max(patch) > 8:
        longest = max((n * s, axis) for axis, (n, s) in enumerate(zip(patch, spacing)) if n > 8)[1]
        patch[longest] -= max(1, patch[longest] // 8)
    if cuda:
        return patch, f"GPU: at most {limit} a side, a batch of 2 in a third of its memory"
    return patch, f"CPU: at most {limit} a side and {CPU_PATCH_VOXELS_3D} voxels"


def plan_dice_background(requested, class_shares: list[float]) -> tuple[bool, str | None]:
    """Whether the soft Dice (loss and validation) covers class 0 too, and why (None when set in the config): for
    `requested` 'auto', when class 0 is not the largest class of the training pixels, so that a minority class
    stored as 0 (ISBI 2012's membranes) is scored as the minority classes 1..K-1 are, whichever value the masks give
    it; a dominant background stays out, as nnU-Net leaves it."""
    if requested != "auto":
        return bool(requested), None
    background, largest = class_shares[0], max(class_shares[1:], default=0.0)
    if not dominant_background(class_shares):
        return True, f"class 0 covers {background:.1%} of the training pixels, less than the largest other class " \
                     f"({largest:.1%}): not a dominant background, so the Dice covers it"
    return False, f"class 0 covers {background:.1%} of the training pixels, the largest class: a background, left " \
                  f"out of the Dice as nnU-Net does"


def planned_settings(cfg: dict, traits: dict, dims: int, dims_reason: str | None, device: dict) -> tuple[dict, dict]:
    """The planned keys' values (explicit values of `cfg` kept), and the reason for each planned one."""
    reasons = {} if cfg["dims"] != "auto" else {"dims": dims_reason}
    base_width = cfg["base_width"]
    if base_width is None:
        base_width = 32 if device["type"] == "cuda" else 16
        reasons["base_width"] = f"{'GPU' if device['type'] == 'cuda' else 'CPU'} default"
    plan_geometry = plan_volume_geometry if dims == 3 else plan_image_geometry
    patch, depth, kernels = plan_geometry(cfg, traits, device, base_width, reasons)
    batch = cfg["batch_size"] or plan_batch_size(patch, depth, base_width, device, kernels)
    if not cfg["batch_size"]:
        reasons["batch_size"] = ("CPU: a fixed cap" if device["type"] != "cuda" else
                                 "activations in a third of the GPU's memory, at most 64")
    oversampling = cfg["foreground_oversampling"]
    if oversampling is None:
        rarest = min(traits["class_shares"][1:], default=1.0)
        oversampling = 0.5 if rarest < RARE_CLASS_SHARE else 0.33
        reasons["foreground_oversampling"] = (f"rarest foreground class {rarest:.1%} of the pixels"
                                              + (f" < {RARE_CLASS_SHARE:.0%}" if oversampling == 0.5 else
                                                 "; nnU-Net's 0.33"))
    dice_background, why = plan_dice_background(cfg["dice_background"], traits["class_shares"])
    if why:
        reasons["dice_background"] = why
    planned = dict(dims=dims, patch_size=list(patch), depth=depth, pool_kernels=kernels, base_width=base_width,
                   batch_size=batch, foreground_oversampling=oversampling, dice_background=dice_background)
    return planned, reasons


def make_plan(cfg: dict, sources: pd.DataFrame, fingerprint: dict, num_classes: int, device: torch.device,
              instances: bool = False, package: dict | None = None) -> dict:
    """The plan of an experiment (`cfg`: its train section, the PLAN_INPUTS keys) from its stored training `sources`
    (rows of the preprocess table), the fingerprint summary, the number of classes, the device and whether it
    trains instances: what plan.json holds (the device, the traits it was planned from, the U-Net's input channels,
    classes and trained parameters, each planned key's value, source and reason, and the resolutions tried).
    `package`: {network, name} of a train.init package (`unetflow.train.finetune.package_network`): its values
    fill the network keys the config leaves unset (source `package`)."""
    taken = package_keys(cfg, package["network"], sources, instances) if package else {}
    cfg = {**cfg, **taken}
    target = plan_device(device)
    dims, dims_reason = choose_dims(cfg["dims"], sources, cfg["patch_size"])
    if cfg["patch_size"] is not None and len(cfg["patch_size"]) != dims:
        raise PlanError(f"config key train.patch_size {cfg['patch_size']} has {len(cfg['patch_size'])} sides but the "
                        f"U-Net is {dims}D (train.dims {cfg['dims']}); give {dims} sides or null")
    traits, channels = training_traits(sources, dims, fingerprint), int(sources["channels"].iloc[0])
    network = dict(device=target, in_channels=channels, num_classes=num_classes)

    def step_time_of(settings: dict) -> float:
        return step_seconds({**cfg, **settings, "device": str(device)}, network)

    resolution, resolution_reason, trials = planned_resolution(cfg, traits, dims, instances, target, step_time_of)
    at_resolution = traits if resolution == 1 else scaled_traits(traits, resolution)
    planned, reasons = planned_settings(cfg, at_resolution, dims, dims_reason, target)
    planned["resolution"] = resolution
    if cfg["resolution"] is None:
        reasons["resolution"] = resolution_reason
    model = UNet(channels, num_classes, planned["depth"], planned["base_width"], cfg["norm"], cfg["deep_supervision"],
                 dims, planned["pool_kernels"])
    settings = {key: dict(value=planned[key], source="planned" if key in reasons else "config",
                          reason=reasons.get(key, "set in the config")) for key in PLANNED_KEYS}
    settings.update({key: dict(value=planned[key], source="package", reason=f"the network of {package['name']}")
                     for key in taken})
    return dict(**network, traits=traits, parameters=trained_parameters(model), resolutions_tried=trials,
                settings=settings)


def package_keys(cfg: dict, network: dict, sources: pd.DataFrame, instances: bool) -> dict:
    """The values of a package's `network` for the network keys `cfg` leaves unset (null, auto; pool_kernels is
    never a config key), but a resolution below 1 where the data leave none to choose (volumes, the instance mode)."""
    fixed = instances or not (sources["kind"] != "volume").all() or network["dims"] == 3
    return {key: value for key, value in network.items() if cfg.get(key) in (None, "auto") and value is not None
            and not (key == "resolution" and fixed and value != 1)}


def planned_resolution(cfg: dict, traits: dict, dims: int, instances: bool, device: dict, step_time_of):
    """The factor the stored images are trained and predicted at, why, and the resolutions tried
    (`unetflow.plan.resolution`); train.resolution when set (ValueError naming it where only 1 applies)."""
    fixed = no_resolution_choice(traits, instances) if dims == 2 else "3D: volumes keep their target spacing"
    if cfg["resolution"] is not None and fixed and cfg["resolution"] != 1:
        raise PlanError(f"config key train.resolution is {cfg['resolution']}, but {fixed}: set it to null or 1")
    if fixed:
        return 1.0, fixed, []
    budget = training_budget(cfg, device["type"])

    def settings_at(scaled: dict) -> dict:
        return planned_settings(cfg, scaled, dims, None, device)[0]

    if cfg["resolution"] is not None:  # the config's, tried as the planner tries its own
        trial = resolution_trial(traits, float(cfg["resolution"]), budget, cfg["val_share"], settings_at,
                                 step_time_of)
        return float(cfg["resolution"]), "set in the config", [trial]
    return plan_resolution(traits, budget, cfg["val_share"], settings_at, step_time_of)


def settings_of(plan: dict) -> dict:
    """The planned values of a plan ({key: value}), to merge over a train section."""
    return {key: entry["value"] for key, entry in plan["settings"].items()}
