"""Model packages: one self-contained file with everything needed to segment new images the way an experiment
predicts its test split, without the training results or the config that made it.

A package is a `torch.save`d dict of tensors and plain Python values, so it loads with
`torch.load(path, weights_only=True)` (no pickled code runs). It holds the weights of every model of the
experiment's ensemble (its folds and those of predict.ensemble), their network settings and each one's training
patch (an ensemble may mix 2D and 3D models, each predicting with its own patch, as `predict` does), the
preprocessing settings as applied (normalisation scheme and its statistics, target voxel spacing), the input
channels, the class table (names, stored values, colours; in the instance mode the instance target) and the palette
of palette masks, the prediction settings (with the instance mode's min_object_size), the voxel spacing of volume
training data, a summary of the training data (key `fingerprint`) and the versions used.
"""

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unetflow.infer.ensemble import refuse_different_patches
from unetflow.instances.targets import instance_target
from unetflow.io.images import mask_palette
from unetflow.io.nifti import volume_spacing

FORMAT = "unetflow-model-package"
FORMAT_VERSION = 3  # raise when a field changes meaning; older readers then refuse newer packages
# 2: preprocess holds the settings as applied (per-volume and CT schemes, their statistics, the target spacing)
# 3: each model holds its own patch_size (2D and 3D members); formats 1 and 2 hold one top-level patch_size; 3D
#    models predict volumes resampled along the slice axis too (preprocess: resample_slice_axis_3d)
PREDICT_KEYS = ("overlap", "batch_size", "mirror", "precision", "largest_component", "min_object_size")
REQUIRED = ("models", "preprocess", "input_channels", "convert_channels", "slice_axis", "classes",
            "palette", "predict", "spacing", "fingerprint", "versions")


class PackageError(ValueError):
    """A file is not a usable model package; the message names the file and what to do."""


@dataclass(frozen=True)
class Package:
    """A loaded model package (see the module docstring for the fields)."""
    path: str
    models: list[dict]           # each {hparams, weights, source, patch_size}
    preprocess: dict             # normalization, clip_percentiles, ct, window, per_volume, spacing (as applied)
    input_channels: int
    convert_channels: bool       # data.channels was set: images of the other channel count are converted
    slice_axis: int
    classes: pd.DataFrame        # index, name, value, color, ignore (instance mode: and instance_target)
    palette: list[int] | None
    predict: dict                # overlap, batch_size, mirror, precision, largest_component, min_object_size
    spacing: list[float] | None  # median voxel spacing of the training volumes
    fingerprint: dict            # `training_data_summary`
    versions: dict

    @property
    def num_classes(self) -> int:
        return int((~self.classes["ignore"].astype(bool)).sum())

    @property
    def patches(self) -> list[list[int]]:
        """The training patch of each model, in model order (2D or 3D by the model)."""
        return [list(model["patch_size"]) for model in self.models]

    @property
    def instance_target(self) -> str | None:
        """The instance target of a model of the instance mode (see `unetflow.instances.targets`), else None."""
        return instance_target(self.classes)


def versions() -> dict:
    """The versions of what made the package."""
    try:
        unetflow = metadata.version("unetflow")
    except metadata.PackageNotFoundError:  # run from the checkout, not installed
        unetflow = "checkout"
    return dict(unetflow=unetflow, torch=str(torch.__version__), numpy=np.__version__, python=platform.python_version())


def training_data_summary(manifest: pd.DataFrame, arrays: pd.DataFrame) -> dict:
    """A summary of the data the models were trained on (sizes, channels, kinds, foreground share)."""
    return dict(cases=int(len(manifest)), sources=int(manifest["image_path"].nunique()),
                kinds=sorted(manifest["kind"].unique().tolist()) if "kind" in manifest else ["image"],
                height_median=float(manifest["height"].median()), width_median=float(manifest["width"].median()),
                height_range=[int(manifest["height"].min()), int(manifest["height"].max())],
                width_range=[int(manifest["width"].min()), int(manifest["width"].max())],
                image_dtypes=sorted(manifest["dtype"].astype(str).unique().tolist()),
                foreground_fraction_mean=float(arrays["foreground_fraction"].mean()))


def training_palette(manifest: pd.DataFrame) -> list[int] | None:
    """The palette of the data set's palette masks (that of the first mask file that has one), or None."""
    for path in manifest["mask_path"].drop_duplicates():
        palette = mask_palette(path)
        if palette is not None:
            return palette
    return None


def training_spacing(manifest: pd.DataFrame) -> list[float] | None:
    """The median voxel spacing of the NIfTI volumes of the manifest, or None without volumes."""
    volumes = manifest.loc[manifest["kind"] == "volume", "image_path"].drop_duplicates() if "kind" in manifest \
        else pd.Series(dtype=str)
    if volumes.empty:
        return None
    return [float(s) for s in np.median([volume_spacing(path) for path in volumes], axis=0)]


def build_package(checkpoints: list[str], sources: list[str], manifest: pd.DataFrame, arrays: pd.DataFrame,
                  classes: pd.DataFrame, preprocess: dict, predict: dict, convert_channels: bool, slice_axis: int,
                  palette: list[int] | None, spacing: list[float] | None) -> dict:
    """The package dict of an experiment from its training checkpoints (`sources`: a name for each, e.g.
    'unet/fold0') and the tables of its training data."""
    loaded = [torch.load(path, map_location="cpu", weights_only=True) for path in checkpoints]
    refuse_different_patches(checkpoints, [c["hparams"].get("dims", 2) for c in loaded],
                             [c["patch_size"] for c in loaded])
    channels = manifest["input_channels"] if "input_channels" in manifest else manifest["channels"]
    table = classes.astype(object).where(classes.notna(), None)
    return dict(
        format=FORMAT, format_version=FORMAT_VERSION, versions=versions(),
        models=[dict(hparams=c["hparams"], weights=c["model"], source=s, patch_size=list(c["patch_size"]))
                for c, s in zip(loaded, sources)],
        preprocess=dict(preprocess),
        input_channels=int(channels.mode()[0]), convert_channels=bool(convert_channels), slice_axis=int(slice_axis),
        classes=[{key: plain(value) for key, value in row.items()} for row in table.to_dict("records")],
        palette=palette, predict={key: predict[key] for key in PREDICT_KEYS}, spacing=spacing,
        fingerprint=training_data_summary(manifest, arrays))


def plain(value):
    """A table cell as a plain Python value (numpy scalars and arrays become int/float/bool/list)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def save_package(package: dict, path) -> Path:
    """Write a package dict (via a temporary file, so a kill never leaves half a package), checked to load as a
    package with `weights_only=True`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(package, tmp)
    load_package(tmp)
    tmp.replace(path)
    return path


def load_package(path) -> Package:
    """The package at `path`, checked; PackageError naming the file when it is missing, corrupt, not a package
    (e.g. a training checkpoint) or from a newer, incompatible version."""
    path = Path(path)
    if not path.is_file():
        raise PackageError(f"{path}: no such model package; give the path of a <experiment>.pt file from "
                           f"results/<experiment>/package/")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises KeyError, UnpicklingError, RuntimeError, ... for foreign files
        raise PackageError(f"{path}: not a readable model package: the file is truncated, corrupt or another kind "
                           f"of file ({type(error).__name__}); copy the package again") from error
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        hint = (" (it is a training checkpoint: use results/<experiment>/package/<experiment>.pt)"
                if isinstance(content, dict) and "hparams" in content else "")
        raise PackageError(f"{path}: not a unetflow model package{hint}")
    version = content.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise PackageError(f"{path}: package format {version} is newer than this unetflow reads "
                           f"({FORMAT_VERSION}); update unetflow to the version that made it")
    required = REQUIRED if version >= 3 else (*REQUIRED, "patch_size")  # formats 1 and 2: one patch for all models
    missing = [key for key in required if key not in content]
    if missing or not content["models"]:
        raise PackageError(f"{path}: incomplete model package (missing {missing or ['models']}); export it again")
    fields = {key: content[key] for key in REQUIRED}
    if version < 3:
        fields["models"] = [dict(model, patch_size=content["patch_size"]) for model in content["models"]]
    return Package(path=str(path), **{**fields, "classes": pd.DataFrame(content["classes"])})
