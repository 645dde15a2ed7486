# Shared definitions: validated config, data locations, per-experiment settings.
import copy
import csv
import glob
import os
import re

from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")


def config_problems(config):
    """Settings the schema cannot judge alone, refused before any job runs (each names its keys)."""
    split, low_high = config["split"], config["preprocess"]["clip_percentiles"]
    problems = []
    if not split["fixed"] and abs(split["train"] + split["val"] + split["test"] - 1) > 1e-6:
        problems.append(f"split.train + split.val + split.test must be 1, got "
                        f"{split['train']} + {split['val']} + {split['test']}")
    if split["fixed"] and split["folds"] > 1:
        problems.append("split.fixed takes train/val from data.manifest: it cannot make split.folds > 1 folds")
    if split["fixed"] and config["data"]["manifest"] is None:
        problems.append("split.fixed needs data.manifest (with a `split` column)")
    if not split["fixed"] and split["test"] == 0 and config["predict"]["split"] == "test":
        problems.append("split.test is 0 but predict.split is test: there is nothing to predict and evaluate")
    if low_high is not None and (len(low_high) != 2 or low_high[0] >= low_high[1]):
        problems.append(f"preprocess.clip_percentiles must be [low, high] with low < high, got {low_high}")
    return problems


PROBLEMS = config_problems(config)
if PROBLEMS:
    raise ValueError("config: " + "; ".join(PROBLEMS))

RESULTS = config["results"]
EXPERIMENTS = list(config["experiments"])
USE_DEMO = config["data"]["images"] is None and config["data"]["manifest"] is None
FOLDS = list(range(config["split"]["folds"]))


wildcard_constraints:
    experiment="|".join(map(re.escape, EXPERIMENTS)),
    fold=r"\d+",


def data_location():
    """The data section with images/masks pointing at the demo data when no data set is given."""
    if USE_DEMO:
        return {**config["data"], "images": f"{RESULTS}/demo/images", "masks": f"{RESULTS}/demo/masks"}
    if config["data"]["manifest"] is None and config["data"]["masks"] is None:
        raise ValueError("config key data.masks: set it to the folder or glob of the masks of data.images")
    return config["data"]


def matched_files(spec):
    """Files a folder (its direct children) or a glob (`**` at any depth) names; nothing for None."""
    if spec is None:
        return []
    paths = glob.glob(os.path.join(spec, "*")) if os.path.isdir(spec) else glob.glob(spec, recursive=True)
    return [path for path in paths if os.path.isfile(path)]


def manifest_files(path):
    """Existing image and mask files a CSV or Parquet manifest lists (relative to its folder); nothing when the
    manifest is missing or unreadable, which ingest then reports."""
    try:
        if path.lower().endswith(".parquet"):
            import pandas

            rows = pandas.read_parquet(path, columns=["image", "mask"]).to_dict("records")
        else:
            with open(path, newline="") as handle:
                rows = list(csv.DictReader(handle))
    except Exception:
        return []
    folder = os.path.dirname(path)
    listed = [os.path.join(folder, str(row.get(key))) for row in rows for key in ("image", "mask")]
    return [file for file in listed if os.path.isfile(file)]


def data_inputs():
    """What ingest reads: the demo folder, or every data file (so new or changed files rerun ingest)."""
    if USE_DEMO:
        return [f"{RESULTS}/demo"]
    data = data_location()
    files = [data["manifest"], *manifest_files(data["manifest"])] if data["manifest"] else []
    return sorted(set(files + [p for key in ("images", "masks", "rois") for p in matched_files(data[key])]))


def merged(base, overrides):
    """`overrides` merged into a copy of `base`, nested dicts merged key by key."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


ORDERED_MAPPINGS = ("classes", "colors")  # their order is the class order


def canonical(section):
    """A config section with its keys sorted at every level (but inside the class mappings, whose order means
    something): Snakemake compares params by their text, so reordering keys in a config must not rerun jobs."""
    if isinstance(section, dict):
        return {key: section[key] if key in ORDERED_MAPPINGS else canonical(section[key]) for key in sorted(section)}
    return section


def experiment_settings(name):
    """train/predict/evaluate sections of one experiment: its overrides over the base config, validated. All
    experiments predict the same split (the leaderboard compares them on the same cases)."""
    overrides = config["experiments"][name]
    settings = merged(config, {"experiments": {name: {}}, **overrides})
    try:
        validate(settings, "../schemas/config.schema.yaml")
    except Exception as error:
        raise ValueError(f"config section experiments.{name} (merged over the top-level settings): {error}")
    check_patch_size(name, settings["train"])
    if settings["predict"]["split"] != config["predict"]["split"]:
        raise ValueError(f"config key experiments.{name}.predict.split: every experiment predicts the same split "
                         f"(the leaderboard compares them on the same cases); set predict.split at the top level")
    ensemble = settings["predict"]["ensemble"]
    unknown = set(ensemble) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"config key predict.ensemble of experiment {name}: no experiments named {sorted(unknown)}")
    if name in ensemble:
        raise ValueError(f"config key predict.ensemble of experiment {name}: it names the experiment itself, whose "
                         f"models are always in its ensemble; list the other experiments only")
    return canonical(settings)


def ensemble_models(wildcards):
    """Checkpoints whose mean softmax predicts an experiment: its folds and those of predict.ensemble."""
    members = [wildcards.experiment, *SETTINGS[wildcards.experiment]["predict"]["ensemble"]]
    return expand(rules.train.output.model, experiment=members, fold=FOLDS)


def check_patch_size(name, train):
    """Before anything runs: the U-Net pools train.depth times, so patch sides must be multiples of 2**depth."""
    multiple = 2 ** train["depth"]
    if train["patch_size"] and any(side % multiple for side in train["patch_size"]):
        raise ValueError(
            f"config key train.patch_size {train['patch_size']} (experiment {name}) must be a multiple of "
            f"2**train.depth = {multiple} in each axis"
        )


SETTINGS = {name: experiment_settings(name) for name in EXPERIMENTS}


def uses_gpu(section):
    """1 when the section asks for a CUDA device (the scheduler then grants a GPU), else 0."""
    return int(section["device"].startswith("cuda"))


def leaderboard_runs():
    """Per experiment: its test summary, the metrics of its folds, and a checkpoint (to count parameters)."""
    return {
        name: dict(
            summary=expand(rules.evaluate.output.summary, experiment=name)[0],
            metrics=expand(rules.train.output.metrics, experiment=name, fold=FOLDS),
            model=expand(rules.train.output.model, experiment=name, fold=FOLDS[0])[0],
        )
        for name in EXPERIMENTS
    }


REPORT_FILES = ("training_curves.png", "metric_distributions.png", "overlays.png", "metrics.html")


def report_targets():
    """Every report file of every experiment (for rule all)."""
    return expand(f"{RESULTS}/{{experiment}}/report/{{name}}", experiment=EXPERIMENTS, name=REPORT_FILES)
