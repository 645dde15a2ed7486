"""Model packages: one self-contained file with everything needed to segment new images the way an experiment
predicts its test split, without the training results or the config that made it.

A package is a `torch.save`d dict of tensors and plain Python values, so it loads with `torch.load(path,
weights_only=True)` (no pickled code runs). It holds the weights of every model of the experiment's ensemble (its folds
and those of predict.ensemble), their network settings and each one's training patch and resolution (an ensemble may mix
2D and 3D models and resolutions, each predicting with its own), the experiment's training plan, the preprocessing
settings as applied (normalisation scheme and its statistics, target voxel spacing, scale), the input channels, the
class table (names, stored values, colours; in the instance mode the instance target), the region table of a region
model (data.regions; `unetflow.io.regions`) and the palette of palette masks, the prediction settings (with the instance
mode's min_object_size), a summary of the training data and the versions used. The workflow's `predict` rule predicts
through the package, so a package segments new images exactly as the experiment's test split was scored.
"""

import functools
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unetflow.config import PACKAGED_PREDICT_KEYS
from unetflow.instances.objects import OBJECT_PROBABILITY
from unetflow.instances.targets import instance_target
from unetflow.io.calibration import stated_pixel_sizes, typical_pixel_size
from unetflow.io.formats import ImageReadError
from unetflow.io.images import mask_palette
from unetflow.io.nifti import axis_codes, usual_axis_codes
from unetflow.io.regions import Regions
from unetflow.io.sources import source_spacing

FORMAT = "unetflow-model-package"
FORMAT_VERSION = 5  # raise when a field changes meaning; readers refuse other versions
# 4: one plan per experiment, sources stored as one array each (fully resampled volumes), predict through packages
# 5: region models (their outputs are regions, a sigmoid each: `regions`); each model's `resolution`
REQUIRED = ("models", "plan", "preprocess", "input_channels", "convert_channels", "slice_axis", "classes", "palette",
            "predict", "training_data", "versions", "regions")


class PackageError(ValueError):
    """A file is not a usable model package; the message names the file and what to do."""


@dataclass(frozen=True)
class Package:
    """A loaded model package (see the module docstring for the fields)."""
    path: str
    models: list[dict]           # each {hparams, weights, source, patch_size, resolution}
    plan: dict                   # the experiment's plan.json
    preprocess: dict             # normalization, clip_percentiles, ct, window, spacing, scale (as applied)
    input_channels: int
    convert_channels: bool       # data.channels was set: images of the other channel count are converted
    slice_axis: int
    classes: pd.DataFrame        # index, name, value, color, ignore (instance mode: and instance_target)
    palette: list[int] | None
    predict: dict                # overlap, batch_size, mirror, precision, largest_component, min_object_size,
                                 # object_probability
    training_data: dict          # `training_data_summary`
    versions: dict
    regions: Regions | None = None  # the regions of a region model (one output each), None for a model of classes

    @property
    def num_classes(self) -> int:
        return int((~self.classes["ignore"].astype(bool)).sum())

    @property
    def patches(self) -> list[list[int]]:
        """The training patch of each model, in model order (2D or 3D by the model)."""
        return [list(model["patch_size"]) for model in self.models]

    @property
    def resolutions(self) -> list[float]:
        """The factor each model's plan resizes the preprocessed images by (1: as preprocessed), in model order."""
        return [float(model["resolution"]) for model in self.models]

    @property
    def slide_pixel_size(self) -> float | None:
        """The pixel size (µm) its training slides were read at (data.slide_pixel_size), or None."""
        return self.training_data.get("slide_pixel_size")

    @property
    def object_probability(self) -> float:
        """The object probability of an instance package (`unetflow.instances.objects`); OBJECT_PROBABILITY for a
        package made before packages chose it."""
        return float(self.predict.get("object_probability", OBJECT_PROBABILITY))

    @property
    def has_3d_model(self) -> bool:
        """Whether any of its models is a 3D U-Net."""
        return any(model["hparams"]["dims"] == 3 for model in self.models)

    @property
    def instance_target(self) -> str | None:
        """The instance target of a model of the instance mode (see `unetflow.instances.targets`), else None."""
        return instance_target(self.classes)


def versions() -> dict:
    """The versions of what made the package."""
    try:
        unetflow = metadata.version("unetflow")
    except metadata.PackageNotFoundError:  # run from the checkout, not installed: its commit, where git can say
        unetflow = f"checkout {checkout_commit()}".strip()
    return dict(unetflow=unetflow, torch=str(torch.__version__), numpy=np.__version__, python=platform.python_version())


@functools.cache
def checkout_commit() -> str:
    """The commit of the git checkout this code runs from ('' where there is none, or no git); asked once per
    process (`versions` is called for every DICOM SEG written)."""
    try:
        found = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return found.stdout.strip() if found.returncode == 0 else ""


def training_data_summary(manifest: pd.DataFrame, stored: pd.DataFrame) -> dict:
    """A summary of the sources the models were trained on (sizes, channels, kinds, foreground share, pixel sizes,
    whether they had regions of interest, the orientation of most volumes and the shallowest one's depth)."""
    return dict(sources=int(len(manifest)), kinds=sorted(manifest["kind"].unique().tolist()),
                slices=int(manifest["slices"].sum()),
                height_median=float(manifest["height"].median()), width_median=float(manifest["width"].median()),
                height_range=[int(manifest["height"].min()), int(manifest["height"].max())],
                width_range=[int(manifest["width"].min()), int(manifest["width"].max())],
                image_dtypes=sorted(manifest["dtype"].astype(str).unique().tolist()),
                foreground_fraction_mean=float(stored["foreground_fraction"].mean()),
                slide_pixel_size=slide_pixel_size(manifest), tiff_pixel_size=tiff_pixel_size(manifest),
                tiff_pixel_height=tiff_pixel_size(manifest, axis=1),
                rois=bool("roi_path" in manifest and manifest["roi_path"].notna().any()),
                axis_codes=usual_axis_codes(map(axis_codes, manifest.loc[manifest["kind"] == "volume", "image_path"])),
                volume_depth_min=shallowest(manifest[manifest["kind"] == "volume"].to_dict("records")))


def volume_depth(row: dict) -> float:
    """How deep a volume reaches along its slice axis: its slices times their spacing (mm)."""
    return float(row["slices"] * source_spacing(row)[0])


def shallowest(rows: list[dict]) -> float | None:
    """The least `volume_depth` of the volumes (rows) whose headers can be read; None for none."""
    depths = []
    for row in rows:
        try:
            depths.append(volume_depth(row))
        except ImageReadError:  # a package built from a manifest whose files have moved
            continue
    return min(depths, default=None)


def tiff_pixel_size(manifest: pd.DataFrame, axis: int = 0) -> float | None:
    """The (lower) median pixel width (µm; `axis` 1: height) the training TIFFs state (ImageJ, OME, resolution tags in
    centimetres), or None when none states one."""
    sizes = list(stated_pixel_sizes(manifest["image_path"], axis).values())
    return typical_pixel_size(sizes) if sizes else None


def slide_pixel_size(manifest: pd.DataFrame) -> float | None:
    """The pixel size (µm) the annotated regions of whole-slide images were trained at (their median; one setting,
    data.slide_pixel_size, made them all), or None when no source came from a slide."""
    sizes = manifest["pixel_size_um"].dropna() if "pixel_size_um" in manifest else pd.Series(dtype=float)
    return float(sizes.median()) if len(sizes) else None


def training_palette(manifest: pd.DataFrame) -> list[int] | None:
    """The palette of the data set's palette masks (that of the first mask file that has one) when most of its masks
    are palette masks, or None (predictions are written as the majority of masks are)."""
    palettes = [mask_palette(path) for path in manifest["mask_path"].drop_duplicates()]
    found = [palette for palette in palettes if palette is not None]
    return found[0] if len(found) > len(palettes) / 2 else None


def packaged_predict(predict: dict, fingerprint: dict, fingerprint_path: str) -> dict:
    """The prediction settings a package holds: the config's, `min_object_size: auto` replaced by the data set's
    smallest object from its fingerprint (`unetflow.plan.fingerprint.smallest_object`), `object_probability: auto` by
    OBJECT_PROBABILITY until an instance package chooses it on its validation images
    (`unetflow.infer.object_probability`)."""
    if predict["object_probability"] == "auto":
        predict = dict(predict, object_probability=OBJECT_PROBABILITY)
    if predict["min_object_size"] != "auto":
        return dict(predict)
    if "min_object_size" not in fingerprint:
        raise ValueError(f"{fingerprint_path} was written by an earlier unetflow and has no min_object_size: set "
                         f"predict.min_object_size to a number of pixels (16 was the default then) or rerun the "
                         f"fingerprint rule (which reruns everything after it)")
    return dict(predict, min_object_size=int(fingerprint["min_object_size"]))


def packaged_mirror(mirror: bool | str, patches: list) -> bool:
    """`predict.mirror` as a package holds it: `auto` mirrors a package with a 3D model (as nnU-Net does; measured
    on MSD hippocampus: +0.006 to +0.011 Dice), not one of 2D models only (+0.002 to +0.003 on ISBI 2012 and DSB
    2018, for 4 times the prediction time; bench/training.md)."""
    return any(len(patch) == 3 for patch in patches) if mirror == "auto" else bool(mirror)


def build_package(checkpoints: list[str], sources: list[str], plan: dict, manifest: pd.DataFrame,
                  stored: pd.DataFrame, classes: pd.DataFrame, preprocess: dict, predict: dict, data: dict,
                  regions: pd.DataFrame | None = None) -> dict:
    """The package dict of an experiment from its training checkpoints (`sources`: a name for each, e.g.
    'unet/fold0'), its `plan`, the tables of its training sources (ingest `manifest`, preprocess table `stored`),
    the settings (`data`: the config's channels and slice_axis) and the region table of region models."""
    loaded = [torch.load(path, map_location="cpu", weights_only=True) for path in checkpoints]
    table = classes.astype(object).where(classes.notna(), None)
    predict = dict(predict, mirror=packaged_mirror(predict["mirror"], [c["patch_size"] for c in loaded]))
    return dict(
        format=FORMAT, format_version=FORMAT_VERSION, versions=versions(),
        models=[dict(hparams=c["hparams"], weights=c["model"], source=s, patch_size=list(c["patch_size"]),
                     resolution=c["plan"]["settings"]["resolution"]["value"]) for c, s in zip(loaded, sources)],
        plan=plan, preprocess=dict(preprocess), input_channels=int(manifest["input_channels"].mode()[0]),
        convert_channels=data["channels"] is not None, slice_axis=int(data["slice_axis"]),
        classes=records(table),
        regions=[] if regions is None else records(regions),
        palette=training_palette(manifest), predict={key: predict[key] for key in PACKAGED_PREDICT_KEYS},
        training_data=training_data_summary(manifest, stored))


def records(table: pd.DataFrame) -> list[dict]:
    """A table as a list of rows of plain Python values."""
    return [{key: plain(value) for key, value in row.items()} for row in table.to_dict("records")]


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
    if version != FORMAT_VERSION:
        newer = version > FORMAT_VERSION
        raise PackageError(f"{path}: package format {version}, but this unetflow reads format {FORMAT_VERSION}; "
                           + (f"update unetflow to the version that made it "
                              f"({content.get('versions', {}).get('unetflow', 'not recorded')})" if newer else
                              "make a new one with this unetflow: run `snakemake --cores all` with the config that "
                              "made it (its models are trained again, as the stored data changed)"))
    missing = [key for key in REQUIRED if key not in content]
    if missing or not content["models"]:
        raise PackageError(f"{path}: incomplete model package (missing {missing or ['models']}); export it again")
    fields = {key: content[key] for key in REQUIRED}
    return Package(path=str(path), **{**fields, "classes": pd.DataFrame(content["classes"]),
                                      "regions": Regions.of(pd.DataFrame(content["regions"]))})
