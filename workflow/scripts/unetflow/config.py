"""The workflow's configuration beyond its schema: settings the schema cannot judge alone, experiments merged
over the top-level sections, and the canonical form rules receive as params.

Dependency-free: the Snakefile imports it to refuse a bad config before any job runs.
"""

import copy
from pathlib import Path

ORDERED_MAPPINGS = ("classes", "colors")  # their order is the class order


def fraction_problem(train: float, val: float, test: float) -> str | None:
    """The problem when the split fractions do not sum to 1, else None."""
    if abs(train + val + test - 1) > 1e-6:
        return (f"split.train + split.val + split.test must be 1, got {train} + {val} + {test} = "
                f"{train + val + test:g}; fix split.train/val/test")
    return None


def config_problems(config: dict) -> list[str]:
    """Settings the schema cannot judge alone, refused before any job runs (each names its keys)."""
    split, low_high = config["split"], config["preprocess"]["clip_percentiles"]
    problems = []
    if not split["fixed"]:
        problems.append(fraction_problem(split["train"], split["val"], split["test"]))
    if split["fixed"] and split["folds"] > 1:
        problems.append("split.fixed takes train/val from data.manifest: it cannot make split.folds > 1 folds")
    if split["fixed"] and config["data"]["manifest"] is None:
        problems.append("split.fixed needs data.manifest (with a `split` column)")
    if not split["fixed"] and split["test"] == 0 and config["predict"]["split"] == "test":
        problems.append("split.test is 0 but predict.split is test: there is nothing to predict and evaluate")
    if low_high is not None and (len(low_high) != 2 or low_high[0] >= low_high[1]):
        problems.append(f"preprocess.clip_percentiles must be [low, high] with low < high, got {low_high}")
    demo_used = config["data"]["images"] is None and config["data"]["manifest"] is None
    if demo_used and config["demo"].get("instances", False) != config["data"].get("instances", False):
        problems.append("demo.instances and data.instances must agree when the demo data is used (instance masks "
                        "train in the instance mode only); set both, e.g. --config demo='{instances: true}' "
                        "data='{instances: true}'")
    return [problem for problem in problems + infer_problems(config) if problem]


def package_name(path: str) -> str:
    """The name a model package's results go under: its file name without '.pt'."""
    name = Path(path).name
    return name[:-3] if name.endswith(".pt") else name


def infer_problems(config: dict) -> list[str]:
    """infer.models entries that are neither experiments of the config nor package files, and name clashes."""
    experiments, problems, names = list(config["experiments"]), [], {}
    for entry in config["infer"]["models"]:
        if entry not in experiments and not Path(entry).is_file():
            problems.append(f"infer.models: '{entry}' is neither an experiment of this config ({experiments}) nor "
                            f"an existing model package file")
        name = entry if entry in experiments else package_name(entry)
        if name in names:
            problems.append(f"infer.models: '{entry}' and '{names[name]}' would both write to results/infer/{name}; "
                            f"rename one package file")
        names[name] = entry
    return problems


def merged(base: dict, overrides: dict) -> dict:
    """`overrides` merged into a copy of `base`, nested dicts merged key by key."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if nested else value
    return result


def canonical(section):
    """A config section with its keys sorted at every level (but inside the class mappings, whose order means
    something): Snakemake compares params by their text, so reordering keys in a config must not rerun jobs."""
    if isinstance(section, dict):
        return {key: section[key] if key in ORDERED_MAPPINGS else canonical(section[key]) for key in sorted(section)}
    return section


def experiment_problems(name: str, settings: dict, config: dict) -> list[str]:
    """What is wrong with experiment `name` whose `settings` are its overrides merged over `config`."""
    problems = []
    train, ensemble = settings["train"], settings["predict"]["ensemble"]
    multiple = 2 ** (train["depth"] or 0)  # a planned depth fits the patch size
    if train["patch_size"] and any(side % multiple for side in train["patch_size"]):
        problems.append(f"config key train.patch_size {train['patch_size']} (experiment {name}) must be a multiple "
                        f"of 2**train.depth = {multiple} in each axis")
    if settings["predict"]["split"] != config["predict"]["split"]:
        problems.append(f"config key experiments.{name}.predict.split: every experiment predicts the same split "
                        f"(the leaderboard compares them on the same cases); set predict.split at the top level")
    unknown = set(ensemble) - set(config["experiments"])
    if unknown:
        problems.append(f"config key predict.ensemble of experiment {name}: no experiments named {sorted(unknown)}")
    if name in ensemble:
        problems.append(f"config key predict.ensemble of experiment {name}: it names the experiment itself, whose "
                        f"models are always in its ensemble; list the other experiments only")
    return problems


def demo_training(train: dict, demo: dict) -> dict:
    """The train section for the demo data: `demo.epochs` epochs when no epochs or budget is set (the demo stays a
    run of under a minute instead of the default time budget)."""
    if all(train[key] is None for key in ("epochs", "budget_steps", "budget_minutes")):
        return {**train, "epochs": demo["epochs"]}
    return train
