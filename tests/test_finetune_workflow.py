"""train.init in the workflow: one experiment fine-tuned from another's package, end to end, and what reruns when the
package's weights, a prediction setting or train.init change (the parts: test_finetune.py)."""

import json
import shutil

import pandas as pd
import torch

from conftest import scheduled_jobs, snakemake, tiny_config, write_config


def fine_tuning_config() -> dict:
    """The tiny demo config with an experiment `unet` (depth 2, width 6) and `tuned`, which starts from its package
    and sets no network of its own."""
    config = tiny_config()
    for key in ("depth", "base_width"):
        del config["train"][key]
    config["train"].update(epochs=1, iterations_per_epoch=2)
    config["experiments"] = {"unet": {"train": {"depth": 2, "base_width": 6}}, "tuned": {"train": {"init": "unet"}}}
    return config


def jobs_of(workdir, config) -> set[tuple[str, str]]:
    """(rule, experiment) of every job a run with `config` would execute."""
    jobs = scheduled_jobs(workdir, configfile=write_config(workdir, config, "changed.yaml"))
    return {(rule, output.split("/")[1]) for rule, output in jobs if rule != "leaderboard"}


def test_an_experiment_fine_tunes_from_another_experiments_package(tmp_path):
    config = fine_tuning_config()
    snakemake(tmp_path, configfile=write_config(tmp_path, config))
    results = tmp_path / "results"
    plan = json.loads((results / "tuned" / "plan.json").read_text())
    assert plan["init"]["package"] == "results/unet/package/unet.pt" and plan["init"]["model"] == "unet/fold0"
    assert not plan["init"]["new_head"] and plan["init"]["normalization_warning"] is None
    assert {key: (plan["settings"][key]["value"], plan["settings"][key]["source"]) for key in ("depth", "base_width")} \
        == dict(depth=(2, "package"), base_width=(6, "package"))
    assert "started from results/unet/package/unet.pt (model unet/fold0)" in \
        (results / "logs" / "tuned" / "train_fold0.log").read_text()
    tuned = torch.load(results / "tuned" / "package" / "tuned.pt", weights_only=True)
    assert tuned["models"][0]["hparams"]["base_width"] == 6
    board = pd.read_parquet(results / "leaderboard.parquet")
    assert set(board["experiment"]) == {"unet", "tuned"}
    started = board.groupby("experiment")["started_from"].first()  # missing for unet (a string column: NaN)
    assert pd.isna(started["unet"]) and started["tuned"] == "results/unet/package/unet.pt"

    assert jobs_of(tmp_path, config) == set()
    package = results / "unet" / "package" / "unet.pt"
    changed = {**config, "experiments": {**config["experiments"], "tuned": {"train": {"init": str(tmp_path / "c.pt")}}}}
    shutil.copy(package, tmp_path / "c.pt")  # train.init names a file now
    assert {("plan", "tuned"), ("train", "tuned")} <= jobs_of(tmp_path, changed)
    mirrored = {**config, "predict": {"mirror": True}}  # rebuilds unet's package, not its weights
    jobs = jobs_of(tmp_path, mirrored)
    assert ("package", "unet") in jobs and not {("plan", "tuned"), ("train", "tuned")} & jobs
    retrained = {**config, "experiments": {**config["experiments"], "unet": {"train": {"depth": 2, "base_width": 6,
                                                                                       "lr": 0.002}}}}
    jobs = jobs_of(tmp_path, retrained)  # new weights: tuned starts from them
    assert {("train", "unet"), ("plan", "tuned"), ("train", "tuned")} <= jobs and ("plan", "unet") not in jobs

def test_an_experiment_that_starts_from_itself_is_refused_before_any_job(tmp_path):
    config = fine_tuning_config()
    config["experiments"]["unet"]["train"]["init"] = "tuned"
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert "start from each other's packages (unet -> tuned -> unet)" in result.stderr + result.stdout
