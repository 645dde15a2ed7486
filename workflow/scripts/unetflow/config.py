"""The workflow's configuration beyond its schema: settings the schema cannot judge alone, experiments merged
over the top-level sections, and the canonical form rules receive as params.

Dependency-free: the Snakefile imports it to refuse a bad config before any job runs.
"""

import copy
from pathlib import Path

from unetflow.tracking.store import store_problems

ORDERED_MAPPINGS = ("classes", "colors", "regions")  # their order is the class (region) order


PLAN_INPUTS = ("device", "dims", "resolution", "patch_size", "depth", "base_width", "batch_size",
               "foreground_oversampling", "dice_background", "norm", "deep_supervision", "loss", "augment",
               "precision", "epochs", "budget_steps", "budget_minutes", "iterations_per_epoch", "warmup_iterations",
               "val_share", "init")  # the train keys the plan rule reads (the network, its step time, the budget)
PACKAGED_PREDICT_KEYS = ("overlap", "batch_size", "mirror", "precision", "largest_component", "min_object_size",
                         "object_probability")
DEMO_EPOCHS = 8  # the demo's training length when the config sets none (a run of under a minute)
LENGTH_KEYS = ("epochs", "budget_steps", "budget_minutes")  # train keys of the training length, one at most
DEFAULT_VAL = 0.15  # split.val of a single split when it is null


def gpu_request(device: str) -> int:
    """The `gpu` resource of a job that runs a model on `device` (a train, predict or infer device setting): 1 for
    `auto` and `cuda[:N]` (under SLURM sbatch --gpus=1, so a GPU cluster gives the default config a GPU; locally it
    counts against --resources gpu=N and is not limited without it), 0 for `cpu` and `mps`. A CPU-only cluster sets
    it to 0 with --set-resources (cluster/README.md)."""
    return int(device == "auto" or device.startswith("cuda"))


def split_fractions(split: dict) -> tuple[float, float, float]:
    """(train, val, test) of the split section with its derived values filled: val null is DEFAULT_VAL for one
    fold and 0 for k folds (every fold validates on its own part), train null is the rest."""
    val = split["val"] if split["val"] is not None else (DEFAULT_VAL if split["folds"] == 1 else 0.0)
    train = split["train"] if split["train"] is not None else 1 - val - split["test"]
    return train, val, split["test"]


def split_problems(split: dict, data: dict, predict_split: str) -> list[str]:
    """Split settings that contradict each other, each naming its keys."""
    problems = []
    if split["group_by"] is not None and split["group_pattern"] is not None:
        problems.append("split.group_by and split.group_pattern are both set: set one of them")
    if split["fixed"]:
        if split["folds"] > 1:
            problems.append("split.fixed takes train/val from data.manifest: it cannot make split.folds > 1 folds")
        if data["manifest"] is None:
            problems.append("split.fixed needs data.manifest (with a `split` column)")
        return problems
    if split["folds"] > 1 and split["val"] is not None:
        problems.append(f"split.val is {split['val']} but split.folds is {split['folds']}: k-fold cross-validation "
                        f"validates each fold on its own part of the train+val pool; remove split.val")
    train, val, test = split_fractions(split)
    if train <= 0 or abs(train + val + test - 1) > 1e-6:
        problems.append(f"split.train + split.val + split.test must be 1 with a training part, got {train:g} + "
                        f"{val:g} + {test:g}; fix split.train/val/test (or leave split.train unset: the rest)")
    if test == 0 and predict_split == "test":
        problems.append("split.test is 0 but predict.split is test: there is nothing to predict and evaluate")
    return problems


def config_problems(config: dict) -> list[str]:
    """Settings the schema cannot judge alone, refused before any job runs (each names its keys)."""
    low_high = config["preprocess"]["clip_percentiles"]
    problems = normalization_problems(config["preprocess"])
    problems += split_problems(config["split"], config["data"], config["predict"]["split"])
    problems += length_problems(config["train"], "train") + declared_class_problems(config["data"])
    problems += region_problems(config["data"])
    if low_high is not None and (len(low_high) != 2 or low_high[0] >= low_high[1]):
        problems.append(f"preprocess.clip_percentiles must be [low, high] with low < high, got {low_high}")
    return problems + infer_problems(config) + store_problems(config["tracking"], config["results"])


def region_labels(regions: dict) -> dict[str, list[int]]:
    """The mask values each region of data.regions may be written as: its values in no later region (a pixel takes
    the label of the last region it lies in, as nnU-Net writes regions back to labels)."""
    names = list(regions)
    return {name: sorted(set(regions[name]) - {value for later in names[i + 1:] for value in regions[later]})
            for i, name in enumerate(names)}


def declared_class_problems(data: dict) -> list[str]:
    """Declared classes that contradict themselves or other data keys (each problem names its keys): data.classes
    and data.colors both set, a mask value or colour given to two classes, data.ignore_label a class value or beside
    colours, data.unannotated not a class."""
    classes, colors, ignore = data.get("classes") or {}, data.get("colors") or {}, data.get("ignore_label")
    problems = []
    if classes and colors:
        problems.append("data.classes and data.colors are both set; declare classes by value or by colour, not both")
    if colors and ignore is not None:
        problems.append("data.ignore_label applies to masks of class values; with data.colors leave it unset")
    for key, table in (("classes", classes), ("colors", {name: tuple(colour) for name, colour in colors.items()})):
        by_value = {}
        for name, value in table.items():
            by_value.setdefault(value, []).append(name)
        kind = "mask value" if key == "classes" else "colour"
        problems += [f"data.{key}: {kind} {list(value) if key == 'colors' else value} is given to {len(names)} "
                     f"classes ({', '.join(names)}); one class per {kind}: keep one of them"
                     for value, names in by_value.items() if len(names) > 1]
    if ignore is not None and ignore in classes.values():
        problems.append(f"data.ignore_label {ignore} is also a class value in data.classes; use a value no class has")
    unannotated = data.get("unannotated", "ignore")
    if unannotated != "ignore" and unannotated not in classes:
        problems.append(f"data.unannotated: '{unannotated}' is neither ignore nor a class of data.classes "
                        f"({', '.join(classes) or 'unset'})")
    return problems


def region_problems(data: dict) -> list[str]:
    """data.regions that cannot be trained (each problem names data.regions): with the instance mode, a nonzero
    foreground or colour masks; an empty region, the ignored value in one, a region that is not written as exactly
    one label; with data.classes, the problems of `region_class_problems`."""
    regions = data.get("regions")
    if not regions:
        return []
    modes = {"instances": "data.instances: true", "foreground": "data.foreground: nonzero", "colors": "data.colors"}
    conflicts = [setting for key, setting in modes.items() if data[key] not in (False, "values", None)]
    if conflicts:
        return [f"data.regions trains nested classes of mask values; it cannot be combined with {setting}: unset "
                f"one of them" for setting in conflicts]
    problems = [f"data.regions: region '{name}' lists no mask value; give it the values of the classes it covers"
                for name, values in regions.items() if not values]
    problems += [f"data.regions: region '{name}' holds data.ignore_label {data['ignore_label']}; ignored pixels "
                 f"belong to no region" for name, values in regions.items() if data["ignore_label"] in values]
    problems += [region_label_problem(name, regions, written)
                 for name, written in region_labels(regions).items() if regions[name] and len(written) != 1]
    return problems + (region_class_problems(regions, list(data["classes"].values())) if data["classes"] else [])


def region_label_problem(name: str, regions: dict, written: list[int]) -> str:
    """Why region `name` of `regions` is not written as one label (`written`: its values in no later region)."""
    values, rule = regions[name], ("each region minus the regions after it must leave exactly one value: the label "
                                   "its pixels are written as, later regions overwriting earlier ones")
    if not written:
        return (f"data.regions: region '{name}' {values} would never be written: each of its values is in a later "
                f"region; order the regions from the largest to the smallest ({rule})")
    later = list(regions)[list(regions).index(name) + 1:]
    outside = [f"'{other}' {regions[other]}" for other in later if not set(regions[other]) <= set(values)]
    nesting = (f"; {', '.join(outside)} is not inside it, as nested regions are: check the values (e.g. BraTS "
               f"labels 1, 2, 4 or 1, 2, 3)" if outside else "")
    return (f"data.regions: region '{name}' minus the regions after it leaves {written}, but it is written as one "
            f"label; reorder the regions, or say which value it is written as by adding a region of the others "
            f"after it ({rule}){nesting}")


def region_class_problems(regions: dict, values: list[int]) -> list[str]:
    """data.regions against the class values (`values`, the background first): values that are no class, the
    background in a region, and foreground classes in no region (they could never be predicted)."""
    problems = [f"data.regions: region '{name}' lists {sorted(set(members) - set(values))}, which are not class "
                f"values of the data set {values}; list mask values of data.classes (or of the masks)"
                for name, members in regions.items() if set(members) - set(values)]
    problems += [f"data.regions: region '{name}' holds {values[0]}, the background (the first class); regions list "
                 f"foreground values, and pixels in no region are background"
                 for name, members in regions.items() if values[0] in members]
    covered = {value for members in regions.values() for value in members}
    missing = [value for value in values[1:] if value not in covered]
    if missing:
        problems.append(f"data.regions: the class values {missing} are in no region, so they could never be "
                        f"predicted; add each to the regions it lies in")
    return problems


def with_length_of(train: dict, given: dict) -> dict:
    """The train section with the training length of `given` (an experiment's or the command line's train keys),
    when it sets one of LENGTH_KEYS, replacing the other length keys rather than clashing with them."""
    if not any(given.get(name) is not None for name in LENGTH_KEYS):
        return train
    return {**train, **{name: given.get(name) for name in LENGTH_KEYS}}


def length_problems(train: dict, key: str) -> list[str]:
    """More than one training length set in a train section (`key`: where it is in the config)."""
    given = [name for name in LENGTH_KEYS if train[name] is not None]
    if len(given) > 1:
        return [f"{key}: {' and '.join(f'{key}.{name}' for name in given)} are all set; a training lasts epochs, "
                f"steps or minutes: keep one, the others null"]
    return []


def normalization_problems(preprocess: dict) -> list[str]:
    """preprocess.window missing for (or given without) the window scheme, clip_percentiles with a fixed scheme."""
    scheme, window, problems = preprocess["normalization"], preprocess["window"], []
    if scheme == "window" and (window is None or window[0] >= window[1]):
        problems.append(f"preprocess.normalization: window needs preprocess.window: [low, high] with low < high, "
                        f"e.g. [-1000, 1000]; got {window}")
    if scheme != "window" and window is not None:
        problems.append(f"preprocess.window is set but preprocess.normalization is {scheme}: set normalization: "
                        f"window, or remove the window")
    if scheme in ("ct", "window") and preprocess["clip_percentiles"] is not None:
        problems.append(f"preprocess.clip_percentiles applies to zscore, zscore_nonzero and minmax; the {scheme} "
                        f"scheme clips to its own range: remove clip_percentiles")
    return problems


def package_name(path: str) -> str:
    """The name a model package's results go under: its file name without '.pt'."""
    name = Path(path).name
    return name[:-3] if name.endswith(".pt") else name


def infer_problems(config: dict) -> list[str]:
    """infer.models entries that are neither experiments of the config nor package files, name clashes, and new
    images left to the demo's model (no data set and no infer.models: a forgotten models key)."""
    experiments, problems, names = list(config["experiments"]), [], {}
    data, infer = config["data"], config["infer"]
    if infer["images"] is not None and not infer["models"] and data["images"] is None and data["manifest"] is None:
        problems.append(f"infer.images is set but infer.models is not, and no data set is configured: the images "
                        f"would be segmented by the demo's model, trained on synthetic cells. Give infer.models: "
                        f"[path/to/package.pt] (or name the experiment, e.g. [{experiments[0]}], to use the demo's "
                        f"model on purpose)")
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
    problems = length_problems(settings["train"], f"experiments.{name}.train")
    train, ensemble = settings["train"], settings["predict"]["ensemble"]
    multiple, patch = 2 ** (train["depth"] or 0), train["patch_size"]  # a planned depth fits the patch size
    if patch and len(patch) == 2 and any(side % multiple for side in patch):  # 3D: the U-Net pads to its pooling
        problems.append(f"config key train.patch_size {patch} (experiment {name}) must be a multiple "
                        f"of 2**train.depth = {multiple} in each axis")
    if patch and train["dims"] != "auto" and len(patch) != train["dims"]:
        problems.append(f"config key train.patch_size {patch} (experiment {name}) has {len(patch)} sides but "
                        f"train.dims is {train['dims']}: give {train['dims']} sides, or null to plan them")
    if settings["predict"]["split"] != config["predict"]["split"]:
        problems.append(f"config key experiments.{name}.predict.split: every experiment predicts the same split "
                        f"(the leaderboard compares them on the same cases); set predict.split at the top level")
    unknown = set(ensemble) - set(config["experiments"])
    if unknown:
        problems.append(f"config key predict.ensemble of experiment {name}: no experiments named {sorted(unknown)}")
    if name in ensemble:
        problems.append(f"config key predict.ensemble of experiment {name}: it names the experiment itself, whose "
                        f"models are always in its ensemble; list the other experiments only")
    return problems + init_problems(name, config)


def experiment_init(name: str, config: dict) -> str | None:
    """train.init of experiment `name`: its own override, else the top-level value."""
    own = config["experiments"][name].get("train", {})
    return own["init"] if "init" in own else config.get("train", {}).get("init")


def init_package(init: str | None, experiments, results: str) -> str | None:
    """The model package file train.init names (None without one): the package of an experiment of this config
    (built by the workflow) or of one under `results` (results/<name>/package/<name>.pt), else the path given."""
    if init is None:
        return None
    own = f"{results}/{init}/package/{init}.pt"
    return own if init in experiments or Path(own).is_file() else init


def init_problems(name: str, config: dict) -> list[str]:
    """train.init of experiment `name` that names no package: the experiment itself, a cycle of experiments that
    start from each other, or neither an experiment nor a package file."""
    init, experiments = experiment_init(name, config), config["experiments"]
    seen, current = [name], init
    while current in experiments and current not in seen:
        seen.append(current)
        current = experiment_init(current, config)
    if current == name:
        chain = " -> ".join([*seen, name])
        return [f"config key train.init of experiment {name}: the experiments start from each other's packages "
                f"({chain}); one of them must train without train.init"]
    path = init_package(init, experiments, config.get("results", "results"))
    if init is not None and init not in experiments and not Path(path).is_file():
        return [f"config key train.init of experiment {name}: '{init}' is neither an experiment of this config "
                f"({list(experiments)}), nor one with a package under {config.get('results', 'results')}/, nor an "
                f"existing model package file"]
    return []


def demo_training(train: dict) -> dict:
    """The train section for the demo data: DEMO_EPOCHS epochs when no training length is set (the demo stays a run
    of under a minute instead of the default time budget)."""
    if all(train[key] is None for key in LENGTH_KEYS):
        return {**train, "epochs": DEMO_EPOCHS}
    return train


# ------------------------------------------------------------------------------------- command-line values
