# Shared definitions: validated config, data locations, per-experiment settings.
import os
import re
import sys

import yaml
from snakemake.utils import validate

# The dependency-light part of the library (unetflow.config, unetflow.config_schema, unetflow.data.pairing and
# infer_images, unetflow.io.slides) checks the config and lists the data.
sys.path.append(workflow.current_basedir.join("../scripts").get_path_or_uri(secret_free=True))

from unetflow.config import (
    PACKAGED_PREDICT_KEYS,
    PLAN_INPUTS,
    canonical,
    config_problems,
    demo_training,
    experiment_problems,
    gpu_request,
    init_package,
    merged,
    package_name,
    with_length_of,
)
from unetflow.config_schema import (
    duplicate_keys,
    exponent_numbers,
    typed_command_line,
    unknown_keys,
    with_command_line,
)
from unetflow.data.infer_images import listed_images, output_name, shard_of
from unetflow.data.pairing import data_files, image_files, input_root, subfolder_note, with_series_files
from unetflow.io.slides import is_slide

# Values given with --config arrive as strings when nested (train='{epochs: 7}'): give them the schema's types,
# merged key by key into the sections of the config files, before the schema checks them; so do the config files'
# numbers in exponent notation without a dot (3e-4), which their YAML 1.1 reader leaves strings. A training length
# given there (train.epochs, budget_steps or budget_minutes) replaces the config files' length, as an experiment's does.
SCHEMA_PATH = workflow.current_basedir.join("../schemas/config.schema.yaml").get_path_or_uri(secret_free=True)
with open(SCHEMA_PATH) as schema_file:
    SCHEMA = yaml.safe_load(schema_file)
COMMAND_LINE = typed_command_line(dict(workflow.config_settings.config), SCHEMA)
config.update(exponent_numbers(with_command_line(config, COMMAND_LINE), SCHEMA))
config["train"] = with_length_of(config.get("train") or {}, COMMAND_LINE.get("train") or {})
if UNKNOWN := [p for path in workflow.configfiles for p in duplicate_keys(path)] + unknown_keys(config, SCHEMA):
    raise ValueError("config: " + "; ".join(UNKNOWN))

validate(config, "../schemas/config.schema.yaml")

PROBLEMS = config_problems(config)
if PROBLEMS:
    raise ValueError("config: " + "; ".join(PROBLEMS))

RESULTS = config["results"]
EXPERIMENTS = list(config["experiments"])
USE_DEMO = config["data"]["images"] is None and config["data"]["manifest"] is None
FOLDS = list(range(config["split"]["folds"]))


def demo_over_data_problem():
    """Why a run without a data set (the demo) is refused: its results folder holds the results of a data set (the
    manifest lists no demo image), which a forgotten --configfile would overwrite with the demo's; else None. Not
    checked where the Snakemake environment lacks pyarrow."""
    manifest = f"{RESULTS}/data/manifest.parquet"
    try:
        from pyarrow import ArrowException, parquet
    except ImportError:
        return None
    try:
        paths = parquet.read_table(manifest, columns=["image_path"]).column("image_path").to_pylist()
    except (OSError, ArrowException, KeyError):
        return None
    demo = os.path.abspath(f"{RESULTS}/demo") + os.sep
    if not paths or any(os.path.abspath(path).startswith(demo) for path in paths):
        return None
    return (
        f"no data set is configured (data.images, data.manifest), so this run would train the demo into "
        f"{RESULTS}/, which holds the results of the data set of {os.path.dirname(paths[0])}: pass its config "
        f"(--configfile), or set results: to another folder to run the demo"
    )


# segmenting new images with package files only (README, "Segment new images", step 3) needs no data set
PACKAGES_ONLY = bool(config["infer"]["images"] and config["infer"]["models"]) and all(
    os.path.isfile(entry) for entry in config["infer"]["models"]
)
if USE_DEMO and not PACKAGES_ONLY and (DEMO_PROBLEM := demo_over_data_problem()):
    raise ValueError(f"config: {DEMO_PROBLEM}")


wildcard_constraints:
    experiment="|".join(map(re.escape, EXPERIMENTS)),
    fold=r"\d+",


def data_location():
    """The data section ingest reads: images/masks pointing at the demo data when no data set is given, and
    instance_target only in the instance mode (so changing it reruns nothing otherwise), unannotated and unpaired
    unless they are the default; paths normalised ('images/' is 'images') and each region's values sorted, so that writing them
    otherwise reruns nothing."""
    data = dict(config["data"])
    for key in ("images", "masks", "manifest", "rois"):
        data[key] = os.path.normpath(data[key]) if data[key] else data[key]
    if data["regions"]:
        data["regions"] = {name: sorted(values) for name, values in data["regions"].items()}
    if not data["instances"]:
        data.pop("instance_target")
    for key, default in (("unannotated", "ignore"), ("unpaired", "refuse")):
        if data[key] == default:  # so that results from before the key need no rerun
            data.pop(key)
    if USE_DEMO:
        return {**data, "images": f"{RESULTS}/demo/images", "masks": f"{RESULTS}/demo/masks"}
    if data["manifest"] is None and data["masks"] is None:
        raise ValueError("config key data.masks: set it to the folder or glob of the masks of data.images")
    return data


def preprocess_params():
    """The preprocess section; its weight_map only when the instance target weight_map uses it (so changing it
    reruns nothing else)."""
    uses = config["data"]["instances"] and config["data"]["instance_target"] == "weight_map"
    return {k: v for k, v in config["preprocess"].items() if uses or k != "weight_map"}


def data_inputs():
    """What ingest reads: the demo folder, or every data file (so new or changed files rerun ingest)."""
    return [f"{RESULTS}/demo"] if USE_DEMO else data_files(data_location())


def experiment_settings(name):
    """train/predict/evaluate sections of one experiment: its overrides over the base config, validated."""
    overrides = config["experiments"][name]
    settings = merged(config, overrides)
    settings["train"] = with_length_of(settings["train"], overrides.get("train") or {})
    try:
        validate(settings, "../schemas/config.schema.yaml")
    except Exception as error:  # Snakemake's validation error, re-raised naming the experiment
        raise ValueError(f"config section experiments.{name} (merged over the top-level settings): {error}")
    problems = experiment_problems(name, settings, config)
    if problems:
        raise ValueError("; ".join(problems))
    if USE_DEMO:
        settings["train"] = demo_training(settings["train"])
    return canonical(settings)


def ensemble_members(experiment):
    """The models whose mean softmax predicts an experiment, as (experiment, fold): its folds and those of
    predict.ensemble, each trained by its `TRAINED_BY` experiment, once."""
    members = dict.fromkeys(TRAINED_BY[m] for m in [experiment, *SETTINGS[experiment]["predict"]["ensemble"]])
    return [(member, fold) for member in members for fold in FOLDS]


def member_models(experiment):
    """Checkpoints of `ensemble_members`."""
    members = ensemble_members(experiment)
    return [expand(rules.train.output.model, experiment=member, fold=fold)[0] for member, fold in members]


def ensemble_models(wildcards):
    """The checkpoints an experiment's package holds (`member_models`): an input function."""
    return member_models(wildcards.experiment)


SETTINGS = {name: experiment_settings(name) for name in EXPERIMENTS}
# Experiments of one train section (that differ in predict or evaluate settings only) share the plan and models of the
# first of them: a prediction setting compared is not mixed with a second training's noise, nor trained twice.
TRAINED_BY = {
    name: next(other for other in EXPERIMENTS if SETTINGS[other]["train"] == SETTINGS[name]["train"])
    for name in EXPERIMENTS
}


def trained_plan(wildcards):
    """The plan of the experiment that trains this experiment's models (`TRAINED_BY`): an input function."""
    return expand(rules.plan.output[0], experiment=TRAINED_BY[wildcards.experiment])[0]


def trained_metrics(wildcards):
    """The training curves of the experiment that trains this experiment's models: an input function."""
    return expand(rules.train.output.metrics, experiment=TRAINED_BY[wildcards.experiment], fold=FOLDS)


def sharing_note(wildcards):
    """What an experiment's package log says when its models are another experiment's, or when members of its
    predict.ensemble train as it does (the same train section: their models are its own, taken once); else ''."""
    name = wildcards.experiment
    owner = TRAINED_BY[name]
    same = [member for member in SETTINGS[name]["predict"]["ensemble"] if TRAINED_BY[member] == owner]
    notes = [f"its plan and models are experiment {owner}'s (the same train section)"] if owner != name else []
    if same:
        notes.append(f"predict.ensemble {same} trains as it does: their models are its own, taken once")
    return "; ".join(notes)


def own_tracking(wildcards):
    """The tracking records of an experiment's own training runs, which its package and report add to; none for an
    experiment whose models another one trains (it would overwrite that one's test metrics)."""
    own = TRAINED_BY[wildcards.experiment] == wildcards.experiment
    return expand(rules.train.output.tracking, experiment=wildcards.experiment, fold=FOLDS) if own else []


def init_inputs(wildcards):
    """The model package an experiment's training starts from (train.init), or nothing: an input of plan and train,
    so a new or changed package plans and trains again. The package of an experiment of this config is built first
    but marked ancient: what reruns the training is its weights changing (`init_models`), not a prediction setting
    that rebuilds the package."""
    init = SETTINGS[wildcards.experiment]["train"]["init"]
    path = init_package(init, EXPERIMENTS, RESULTS)
    return [] if not path else [ancient(path)] if init in EXPERIMENTS else [path]


def init_models(wildcards):
    """The checkpoints in the package of the experiment that train.init names (none for a package file)."""
    init = SETTINGS[wildcards.experiment]["train"]["init"]
    return member_models(init) if init in EXPERIMENTS else []


def uses_gpu(section):
    """The `gpu` resource of a job that runs a model with the section's device (see `gpu_request`)."""
    return gpu_request(section["device"])


def leaderboard_runs():
    """Per experiment: its test summary, the training metrics of every model its package holds (its folds and those
    of its ensemble members), the plans of the experiments that trained them (the first's dims and patch size, the
    parameters of each) and their names."""
    runs = {}
    for name in EXPERIMENTS:
        models = ensemble_members(name)
        members = list(dict.fromkeys(member for member, _ in models))
        runs[name] = dict(
            summary=expand(rules.evaluate.output.summary, experiment=name)[0],
            metrics=[expand(rules.train.output.metrics, experiment=member, fold=fold)[0] for member, fold in models],
            plans=[expand(rules.plan.output[0], experiment=member)[0] for member in members],
            trained_by="+".join(members),
        )
    return runs


REPORT_FILES = ("training_curves.png", "metric_distributions.png", "overlays.png", "metrics.html")


def report_targets():
    """Every report file of every experiment (for rule all)."""
    return expand(f"{RESULTS}/{{experiment}}/report/{{name}}", experiment=EXPERIMENTS, name=REPORT_FILES)


# infer (rules infer_*): the packages and the shards of images of infer.images
INFER = config["infer"]


def infer_models():
    """{name: package path} of every model infer uses: infer.models names experiments of this config (their
    packages are built by rule package, defined before this is called) or package files; none given = every
    experiment."""
    models = {}
    for entry in INFER["models"] or EXPERIMENTS:
        if entry in EXPERIMENTS:
            models[entry] = expand(rules.package.output[0], experiment=entry)[0]
        else:
            models[package_name(entry)] = entry
    return models


def infer_inputs():
    """The images to segment: ({shard: its image files} by a hash of their paths, whole-slide images left out;
    {name: file} of the whole-slide images, named as their masks are)."""
    shards, slides, root = {}, {}, input_root(INFER["images"])
    for path in listed_images(INFER["images"]):
        if is_slide(path):
            slides[output_name(path, root)] = str(path)
        else:
            shards.setdefault(shard_of(path, INFER["shards"]), []).append(str(path))
    return shards, slides


def infer_targets(wildcards):
    """The summary of every model, once infer.images is set and matches images."""
    if INFER["images"] is None:
        raise ValueError(
            "config key infer.images: set it to the folder, glob or manifest of the images to segment "
            "(e.g. --config infer='{images: new_images}')"
        )
    if not INFER_SHARDS and not INFER_SLIDES:
        note = subfolder_note(INFER["images"]) or "check the path"
        raise ValueError(f"config key infer.images = '{INFER['images']}': no image files matched; {note}")
    return expand(rules.infer_summary.output.summary, model=list(INFER_MODELS))
