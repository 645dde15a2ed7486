"""Config on the command line: `--config section='{key: value}'` (the Snakemake idiom for a quick rerun) gets the
types the schema asks for and is merged key by key into the sections of the config files. Each test reads the
config the real workflow resolves, in a dry run of a Snakefile that includes it and prints its config."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import REPO, tiny_config, write_config
from unetflow.config import declared_class_problems
from unetflow.config_schema import CommandLineConfigError, duplicate_keys, typed_command_line, unknown_keys
from unetflow.threads import job_threads

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
MARK = "RESOLVED CONFIG "


def dry_run(tmp_path, *config: str, configfile=None) -> subprocess.CompletedProcess:
    """A dry run of the workflow with `--config` entries; the Snakefile prints the resolved config and the
    per-experiment settings after the workflow's own code has checked them."""
    wrapper = tmp_path / "Snakefile"
    wrapper.write_text(f'include: "{REPO / "Snakefile"}"\n\n\n'
                       f'print("{MARK}" + __import__("json").dumps({{"config": config, "settings": SETTINGS}}))\n')
    configfile = configfile or write_config(tmp_path, tiny_config(), "base.yaml")
    command = [sys.executable, "-m", "snakemake", "-s", str(wrapper), "--directory", str(tmp_path), "--cores", "1",
               "--dry-run", "--configfile", str(configfile)] + (["--config", *config] if config else [])
    return subprocess.run(command, capture_output=True, text=True, check=False)


def resolved(tmp_path, *config: str, configfile=None) -> dict:
    """{'config': ..., 'settings': ...} as the workflow resolved them."""
    result = dry_run(tmp_path, *config, configfile=configfile)
    lines = [line for line in result.stdout.splitlines() if line.startswith(MARK)]
    assert result.returncode == 0 and lines, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(lines[0][len(MARK):])


@pytest.fixture
def my_config(tmp_path):
    """A config file of one's own with several train keys and a predict key."""
    config = tiny_config()
    config["train"].update(lr=0.01, loss="dice", patch_size=[32, 32])
    config["predict"] = {"mirror": True}
    return write_config(tmp_path, config, "my.yaml")


def test_nested_value_is_typed_and_merged_into_the_configured_section(tmp_path, my_config):
    before = resolved(tmp_path, configfile=my_config)
    after = resolved(tmp_path, "train={epochs: 7}", configfile=my_config)
    assert before["config"]["train"]["epochs"] == 2 and before["config"]["train"]["lr"] == 0.01
    assert after["config"]["train"] == {**before["config"]["train"], "epochs": 7}  # every other key of my.yaml
    assert {k: v for k, v in after["config"].items() if k != "train"} == \
           {k: v for k, v in before["config"].items() if k != "train"}
    assert after["settings"]["unet"]["train"] == {**before["settings"]["unet"]["train"], "epochs": 7}


def test_single_top_level_key(tmp_path):
    assert resolved(tmp_path, "results=2026")["config"]["results"] == "2026"  # Snakemake reads it as a number


def test_lists_get_their_item_types(tmp_path):
    config = resolved(tmp_path, "train={patch_size: [32, 64]}", "evaluate={spacing: [0.5, 2]}")["config"]
    assert config["train"]["patch_size"] == [32, 64] and config["evaluate"]["spacing"] == [0.5, 2]


def test_booleans(tmp_path):
    config = resolved(tmp_path, "predict={mirror: true, largest_component: yes, save_probabilities: False}")
    assert [config["config"]["predict"][key] for key in ("mirror", "largest_component", "save_probabilities")] == \
           [True, True, False]


def test_floats_and_nulls(tmp_path):
    config = resolved(tmp_path, "train={lr: 1e-2, foreground_oversampling: .5, batch_size: null}")["config"]
    assert config["train"]["lr"] == 0.01 and config["train"]["foreground_oversampling"] == 0.5
    assert config["train"]["batch_size"] is None


def test_experiments_are_typed_like_the_sections_they_override(tmp_path):
    settings = resolved(tmp_path, "experiments={deep: {train: {depth: 3, lr: 0.002, compile: false}}}")["settings"]
    assert set(settings) == {"deep"}
    assert (settings["deep"]["train"]["depth"], settings["deep"]["train"]["lr"]) == (3, 0.002)
    assert settings["deep"]["train"]["compile"] is False


def test_class_table_on_the_command_line_replaces_the_configured_one(tmp_path):
    config = tiny_config()
    config["data"] = {"images": str(tmp_path / "img"), "masks": str(tmp_path / "msk"),
                      "classes": {"membrane": 0, "cell": 255}}
    configfile = write_config(tmp_path, config, "data.yaml")
    data = resolved(tmp_path, "data={classes: {cell: 1, background: 0}}", configfile=configfile)["config"]["data"]
    assert list(data["classes"].items()) == [("cell", 1), ("background", 0)]
    assert data["images"] == str(tmp_path / "img")


@pytest.mark.parametrize("entry,words", [
    ("train={epochs: seven}", "config key train.epochs (from --config): 'seven' is not an integer"),
    ("train={lr: fast}", "config key train.lr (from --config): 'fast' is not a number"),
    ("train={patch_size: [32, big]}", "config key train.patch_size[1] (from --config): 'big' is not an integer"),
    ("data={channels: 2}", "config key data.channels (from --config): '2' is not one of [1, 3, None]"),
])
def test_wrong_type_is_a_clear_error_naming_the_key(tmp_path, entry, words):
    result = dry_run(tmp_path, entry)
    assert result.returncode != 0 and words in result.stdout + result.stderr


def test_typing_leaves_unknown_keys_to_the_schema():
    typed = typed_command_line({"train": {"epoch": "7"}, "train_typo": {"a": "1"}}, SCHEMA)
    assert typed == {"train": {"epoch": 7}, "train_typo": {"a": 1}}  # read as YAML would; validate names the typo
    with pytest.raises(CommandLineConfigError, match="split.fixed"):
        typed_command_line({"split": {"fixed": "maybe"}}, SCHEMA)


def test_exponent_numbers_of_a_config_file_are_numbers(tmp_path):
    """`lr: 3e-4` (YAML 1.1, which Snakemake reads config files with, takes it for a string) in a file of one's own,
    top level and in an experiment; a string where the schema takes strings stays one."""
    config = {key: value for key, value in tiny_config().items() if key != "results"}
    text = yaml.safe_dump(config, sort_keys=False) + "results: 1e5\n"
    text += "experiments:\n  tuned:\n    train: {lr: 3e-4, weight_decay: 1E-5}\n"
    path = tmp_path / "exponent.yaml"
    path.write_text(text.replace("train:\n", "train:\n  lr: 1e-3\n", 1))
    assert yaml.safe_load(path.read_text())["experiments"]["tuned"]["train"]["lr"] == "3e-4"  # what PyYAML reads
    config = resolved(tmp_path, configfile=path)["config"]
    assert config["train"]["lr"] == 1e-3 and config["results"] == "1e5"
    assert config["experiments"]["tuned"]["train"] == {"lr": 3e-4, "weight_decay": 1e-5}


def test_contradicting_class_declarations_are_refused_before_any_job(tmp_path):
    problems = declared_class_problems({"classes": {"background": 0, "lesion": 2, "lesion_copy": 2}, "colors": None,
                                        "ignore_label": 0})
    assert problems == ["data.classes: mask value 2 is given to 2 classes (lesion, lesion_copy); one class per mask "
                        "value: keep one of them",
                        "data.ignore_label 0 is also a class value in data.classes; use a value no class has"]
    problems = declared_class_problems({"classes": {"a": 0, "b": 1}, "colors": {"a": [0, 0, 0], "b": [0, 0, 0]},
                                        "ignore_label": 5})
    assert [problem.split(";")[0] for problem in problems] == [
        "data.classes and data.colors are both set", "data.ignore_label applies to masks of class values",
        "data.colors: colour [0, 0, 0] is given to 2 classes (a, b)"]
    result = dry_run(tmp_path, "data={classes: {background: 0, lesion: 2, lesion_copy: 2}}")
    assert result.returncode != 0 and "mask value 2 is given to 2 classes" in result.stdout + result.stderr


def test_an_unknown_key_is_named_with_the_closest_setting_not_the_schema(tmp_path):
    config = tiny_config()
    config["trian"] = {"epochs": 3}
    config["data"] = {"imags": "here"}
    config["experiments"] = {"wide": {"train": {"base_widht": 32}}}
    assert unknown_keys(config, SCHEMA) == [
        "config key trian is not a setting (did you mean train?); config/README.md lists them",
        "config key data.imags is not a setting (did you mean data.images?); config/README.md lists them",
        "config key experiments.wide.train.base_widht is not a setting (did you mean experiments.wide.train."
        "base_width?); config/README.md lists them"]
    result = dry_run(tmp_path, "train={epochz: 7}")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "config key train.epochz is not a setting (did you mean train.epochs?)" in output
    assert "additionalProperties" not in output  # no schema dump


def test_a_key_given_twice_in_a_config_file_is_named_with_both_lines(tmp_path):
    text = yaml.safe_dump(tiny_config(), sort_keys=False)
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text(text + "train:\n  epochs: 3\ndata:\n  classes: {background: 0, cell: 1, cell: 2}\n")
    line = text.count("\n") + 1
    assert yaml.safe_load(repeated.read_text())["data"]["classes"] == {"background": 0, "cell": 2}  # silently
    first = next(number for number, row in enumerate(text.splitlines(), 1) if row == "train:")
    assert duplicate_keys(repeated) == [
        f"{repeated} line {line}: key train is given twice (first at line {first}), and YAML keeps only the last "
        f"without a word; merge them",
        f"{repeated} line {line + 3}: key cell is given twice (first at line {line + 3}), and YAML keeps only the "
        f"last without a word; merge them"]
    result = dry_run(tmp_path, configfile=repeated)
    assert result.returncode != 0 and f"{repeated} line {line + 3}: key cell is given twice" in result.stdout
    assert duplicate_keys(write_config(tmp_path, tiny_config())) == []


def test_the_demo_is_refused_over_the_results_of_a_data_set(tmp_path):
    (tmp_path / "results" / "data").mkdir(parents=True)
    manifest = tmp_path / "results" / "data" / "manifest.parquet"
    pd.DataFrame({"image_path": ["/lab/images/a.png"]}).to_parquet(manifest)  # a forgotten --configfile
    result = dry_run(tmp_path)
    assert result.returncode != 0 and "no data set is configured (data.images, data.manifest), so this run would " \
        "train the demo into results/, which holds the results of the data set of /lab/images" in result.stdout
    (tmp_path / "new").mkdir()
    (tmp_path / "colleague.pt").write_bytes(b"")  # segmenting with a package file needs no data set
    assert resolved(tmp_path, f"infer={{images: new, models: [{tmp_path / 'colleague.pt'}]}}")["config"]["results"] \
        == "results"
    pd.DataFrame({"image_path": ["results/demo/images/a.png"]}).to_parquet(manifest)  # the demo's own results
    assert resolved(tmp_path)["config"]["results"] == "results"


def test_a_training_length_on_the_command_line_or_in_an_experiment_replaces_the_configured_one(tmp_path):
    config = tiny_config()  # epochs: 2
    config["experiments"] = {"unet": {}, "timed": {"train": {"budget_minutes": 0.5}}}
    resolved_config = resolved(tmp_path, "train={budget_steps: 40}", configfile=write_config(tmp_path, config))
    lengths = {name: {key: settings["train"][key] for key in ("epochs", "budget_steps", "budget_minutes")}
               for name, settings in resolved_config["settings"].items()}
    assert lengths == {"unet": {"epochs": None, "budget_steps": 40, "budget_minutes": None},
                       "timed": {"epochs": None, "budget_steps": None, "budget_minutes": 0.5}}
    config["train"]["budget_steps"] = 40  # two lengths in one section still clash
    result = dry_run(tmp_path, configfile=write_config(tmp_path, config))
    assert "train.epochs and train.budget_steps are all set; a training lasts epochs, steps or minutes: keep one, " \
           "the others null" in result.stdout + result.stderr


def test_a_job_uses_no_more_threads_than_its_slurm_allocation_and_its_cpus(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert job_threads(1) == 1 and job_threads(cpus + 8) == cpus  # no more than the CPUs it may run on
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # Snakemake inside the job counts the node's CPUs
    assert job_threads(8) == 1
