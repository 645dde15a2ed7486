"""Fine-tuning (`train.init`): an experiment's training starts from the weights of a model package
(`unetflow.infer.package`), the `package` rule's file of another experiment or of another data set.

- The model: the package's first model (fold 0 of the experiment that made it; the plan names it).
- The network: the plan takes the model's dims, depth, base width, pooling (3D), patch and resolution for every one
  of them the config leaves unset (a resolution below 1 only where the new data allow one: 2D images, not the
  instance mode), each marked `package` in plan.json.
- The head: kept when the outputs mean the same (the same class names in the same order, or the same regions);
  otherwise the output head (and the deep-supervision heads) are newly He-initialised and every other layer loaded.
- Refused before any training (`InitError`, naming the package and the setting or data): a 3D model for data that
  are not all volumes of several slices, or `train.dims`/`patch_size` of other dims; another number of input
  channels; a `train.depth`, `base_width` or `norm` other than the model's (its weights fit only its network); an
  instance model for semantic data or the reverse (or another instance target) when the outputs differ; an instance
  model on binary semantic data (background/foreground, the weight-map target's outputs) keeps its head.
- Normalisation: the data stages are shared by every experiment (a fine-tuned and a scratch experiment are scored on
  the same stored data), so the new data keep the normalisation `preprocess` gives them; it follows the package when
  both resolve to the same scheme (per-image z-score of 2D images, the default, is the same function whatever the
  data), and the plan warns, naming both, when they differ a lot (`normalization_warning`).
"""

import hashlib
from pathlib import Path

import pandas as pd
import torch

from unetflow.infer.package import Package, load_package
from unetflow.instances.targets import instance_target
from unetflow.io.labels import trained_classes

HEAD_PREFIXES = ("head.", "aux_heads.")  # the layers whose outputs are the classes (regions)
CT_MEAN_SHIFT = 0.5  # ct statistics far apart: means more than this many package stds apart,
CT_STD_RATIO = 2.0  # or standard deviations more than this factor apart
WINDOW_SHIFT = 0.1  # windows far apart: a bound moved by more than this share of the package's window width


class InitError(ValueError):
    """A package cannot start this training; the message names the package and the setting or data."""


def file_digest(path) -> str:
    """SHA-256 of a file (the init package's identity in the plan and in the resume state)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_network(model: dict) -> dict:
    """The network of a package's model as plan keys: dims, depth, base_width, pool_kernels (3D; None in 2D, 2x2
    at every level), patch_size, resolution."""
    hparams = model["hparams"]
    return dict(dims=hparams["dims"], depth=hparams["depth"], base_width=hparams["base_width"],
                pool_kernels=hparams["pool_kernels"] if hparams["dims"] == 3 else None,
                patch_size=list(model["patch_size"]), resolution=float(model["resolution"]))


def output_names(classes: pd.DataFrame, regions: pd.DataFrame | None) -> tuple[str, list[str]]:
    """What a model's outputs are: ('regions', their names) or ('classes', the trained class names), in order."""
    if regions is not None and len(regions):
        return "regions", regions.sort_values("index")["name"].tolist()
    return "classes", trained_classes(classes)["name"].tolist()


def package_outputs(package: Package) -> tuple[str, list[str]]:
    """`output_names` of a package."""
    regions = None if package.regions is None else pd.DataFrame(dict(index=range(len(package.regions.names)),
                                                                      name=package.regions.names))
    return output_names(package.classes, regions)


def described(target: str | None) -> str:
    """An instance target (or None) in words."""
    return f"the instance mode ({target})" if target else "semantic classes"


def init_refusals(package: Package, cfg: dict, sources: pd.DataFrame, classes: pd.DataFrame,
                  regions: pd.DataFrame | None) -> list[str]:
    """What keeps the package's first model from starting this training (`cfg`: the train section; the stored
    training `sources`, the data's class and region tables), each naming the package and the setting or data."""
    model, name = package.models[0], f"train.init package {package.path} (model {package.models[0]['source']})"
    network, hparams, problems = package_network(model), model["hparams"], []
    if network["dims"] == 3 and not ((sources["kind"] == "volume") & (sources["slices"] > 1)).all():
        problems.append(f"{name} is a 3D U-Net, but the training data are not all NIfTI volumes of several "
                            f"slices; train from a 2D package or without train.init")
    if cfg["dims"] != "auto" and cfg["dims"] != network["dims"]:
        problems.append(f"{name} is a {network['dims']}D U-Net but train.dims is {cfg['dims']}")
    if cfg["patch_size"] is not None and len(cfg["patch_size"]) != network["dims"]:
        problems.append(f"{name} is a {network['dims']}D U-Net but train.patch_size {cfg['patch_size']} has "
                        f"{len(cfg['patch_size'])} sides")
    channels = int(sources["channels"].iloc[0])
    if hparams["in_channels"] != channels:
        problems.append(f"{name} takes {hparams['in_channels']}-channel images but the training data have {channels} "
                        f"channel(s); set data.channels to {hparams['in_channels']} to convert them")
    for key in ("depth", "base_width", "norm"):
        if cfg[key] is not None and cfg[key] != hparams[key]:
            problems.append(f"{name} has {key} {hparams[key]} but train.{key} is {cfg[key]}: its weights fit only "
                            f"its own network; set train.{key} to {hparams[key]} (or leave it unset)")
    targets = package.instance_target, instance_target(classes)
    if targets[0] != targets[1] and head_is_new(package, classes, regions):
        problems.append(f"{name} is a model of {described(targets[0])} {package_outputs(package)[1]}, but the data "
                        f"are trained as {described(targets[1])} {output_names(classes, regions)[1]} (data.instances, "
                        f"data.instance_target): the outputs differ in kind; fine-tune from a package of the same mode")
    return problems


def head_is_new(package: Package, classes: pd.DataFrame, regions: pd.DataFrame | None) -> bool:
    """Whether the data's outputs differ from the package's (other class or region names, order or count)."""
    return package_outputs(package) != output_names(classes, regions)


def checked_init(path, cfg: dict, sources: pd.DataFrame, classes: pd.DataFrame,
                 regions: pd.DataFrame | None) -> Package:
    """The package train.init names, loaded and checked against the data; InitError listing every refusal."""
    package = load_package(path)
    problems = init_refusals(package, cfg, sources, classes, regions)
    if problems:
        raise InitError("; ".join(problems))
    return package


def normalization_warning(packaged: dict, applied: dict) -> str | None:
    """Why the new data's normalisation (`applied`: preprocess settings.json) differs a lot from the package's
    (`packaged`), or None: another scheme; ct statistics whose means lie over CT_MEAN_SHIFT package standard
    deviations apart or whose standard deviations differ by over CT_STD_RATIO times; windows whose bounds moved by
    over WINDOW_SHIFT of the package's width."""
    old, new = packaged["normalization"], applied["normalization"]
    if old != new:
        return (f"the package's inputs were normalised with {old}, the new data's with {new}; set "
                f"preprocess.normalization: {old} to follow the package")
    if old == "ct":
        a, b = packaged["ct"], applied["ct"]
        if abs(a["mean"] - b["mean"]) > CT_MEAN_SHIFT * a["std"] or max(a["std"], b["std"]) > CT_STD_RATIO * min(
                a["std"], b["std"]):
            return (f"ct statistics far apart: the package's foreground mean {a['mean']:.1f}, std {a['std']:.1f}; "
                    f"the new data's mean {b['mean']:.1f}, std {b['std']:.1f} (the data keep their own)")
    if old == "window":
        width = packaged["window"][1] - packaged["window"][0]
        if max(abs(x - y) for x, y in zip(packaged["window"], applied["window"])) > WINDOW_SHIFT * width:
            return (f"windows far apart: the package's {packaged['window']}, the new data's {applied['window']}; "
                    f"set preprocess.window: {packaged['window']} to follow the package")
    return None


def init_record(package: Package, classes: pd.DataFrame, regions: pd.DataFrame | None, applied: dict) -> dict:
    """What plan.json records of the init package: its path and SHA-256, the model started from, whether the head
    is new, and the normalisation warning (None when the normalisations agree)."""
    return dict(package=str(package.path), sha256=file_digest(package.path), model=package.models[0]["source"],
                new_head=head_is_new(package, classes, regions),
                normalization_warning=normalization_warning(package.preprocess, applied))


def init_weights(plan: dict, path) -> dict | None:
    """The weights training starts from: the plan's init package's first model (None without train.init);
    InitError when the file is no longer the one the plan was made with."""
    init = plan.get("init")
    if init is None:
        return None
    if file_digest(path) != init["sha256"]:
        raise InitError(f"train.init package {path} changed since the plan was made from it; run the workflow "
                        f"again (it plans anew)")
    return load_package(Path(path)).models[0]["weights"]


def load_init_weights(model: torch.nn.Module, weights: dict, new_head: bool) -> list[str]:
    """Load a package model's `weights` into `model`: every layer, but the heads when `new_head` (they keep their He
    initialisation) and deep-supervision heads only one of them has. Returns the names left newly initialised."""
    own = model.state_dict()
    kept = {key: value for key, value in weights.items()
            if key in own and not (new_head and key.startswith(HEAD_PREFIXES))}
    missing, _ = model.load_state_dict(kept, strict=False)
    unexplained = [key for key in missing if not key.startswith(HEAD_PREFIXES)]
    if unexplained:
        raise InitError(f"the train.init weights lack {unexplained[:5]} of the planned network")
    return missing
