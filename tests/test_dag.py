"""The DAG fans out as configured (experiments x folds), and GPU jobs running together get different GPUs (also with
device auto); a SLURM job granted GPUs that PyTorch does not see says so."""

import logging
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, job_counts, scheduled_jobs, snakemake, tiny_config, write_config, write_pairs
from unetflow import gpu
from unetflow.config import gpu_request
from unetflow.gpu import SLURM_GPU_VARIABLES, claim_slot, pick_device

ONE_EXPERIMENT = {"plan": 1, "train": 1, "package": 1, "predict": 1, "evaluate": 1, "report": 1, "leaderboard": 1}


def test_experiments_times_folds(tmp_path):
    config = tiny_config()
    config["split"] = {"folds": 3, "test": 0.25}
    config["experiments"] = {"base": {}, "deep": {"train": {"depth": 3}}, "dice": {"train": {"loss": "dice"}}}
    counts = job_counts(tmp_path, config)
    assert counts["train"] == 9 and counts["plan"] == counts["predict"] == counts["evaluate"] == 3
    assert counts["leaderboard"] == 1 and counts["split"] == 1 and counts["preprocess"] == 1


def test_adding_an_experiment_runs_only_that_experiment(tiny_run):
    config = tiny_config()
    config["experiments"] = {"unet": {}, "wide": {"train": {"base_width": 12}}}
    jobs = scheduled_jobs(tiny_run, configfile=write_config(tiny_run, config, "two.yaml"))
    assert all("/wide/" in output for rule, output in jobs if rule != "leaderboard")
    assert job_counts(tiny_run, config, name="two.yaml") == ONE_EXPERIMENT


def test_an_experiment_that_differs_in_prediction_only_uses_the_models_it_shares(tiny_run):
    config = tiny_config()
    config["experiments"] = {"unet": {}, "largest": {"predict": {"largest_component": True}}}
    jobs = scheduled_jobs(tiny_run, configfile=write_config(tiny_run, config, "two.yaml"))
    assert all("/largest/" in output for rule, output in jobs if rule != "leaderboard")
    assert job_counts(tiny_run, config, name="two.yaml") == {
        rule: count for rule, count in ONE_EXPERIMENT.items() if rule not in ("plan", "train")}


def test_an_instance_setting_outside_the_instance_mode_reruns_nothing(tiny_run):
    config = tiny_config()
    config["data"] = {**config.get("data", {}), "instance_target": "three_class"}
    assert job_counts(tiny_run, config) == {}
    config["data"]["lossy_masks"] = "snap"  # a data setting ingest uses does rerun it
    assert job_counts(tiny_run, config).get("ingest") == 1


def test_a_data_path_written_otherwise_reruns_nothing(tmp_path):
    images, masks = write_pairs(tmp_path / "data", count=4, values=(0, 1, 2))
    config = tiny_config()
    config["data"] = {"images": str(images), "masks": str(masks), "regions": {"all": [1, 2], "inner": [2]}}
    snakemake(tmp_path, "--until", "ingest", configfile=write_config(tmp_path, config))
    config["data"].update(images=f"{images}/", masks=f"{tmp_path}/data/../data/masks", regions={"all": [2, 1],
                                                                                                  "inner": [2]})
    output = snakemake(tmp_path, "--dry-run", "--until", "ingest", configfile=write_config(tmp_path, config)).stdout
    assert "rule ingest" not in output


def test_gpu_slots_are_exclusive_between_processes(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from unetflow.gpu import claim_slot
        print(claim_slot({str(tmp_path)!r}, 2), flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True, cwd=REPO / "workflow" / "scripts")
    try:
        assert holder.stdout.readline().strip() == "0"
        assert claim_slot(str(tmp_path), 2) == 1  # slot 0 is held by the other process
    finally:
        holder.kill()
        holder.wait()


def test_a_device_other_than_the_cpu_asks_the_scheduler_for_a_gpu():
    assert [gpu_request(device) for device in ("auto", "cuda", "cuda:1", "cpu", "mps")] == [1, 1, 1, 0, 0]


@pytest.fixture
def cuda_gpus(monkeypatch):
    """PyTorch sees two CUDA GPUs (faked), outside SLURM; the GPU slots claimed are released afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    held = []
    monkeypatch.setattr(gpu, "_held", held)
    yield monkeypatch
    for handle in held:
        handle.close()


def test_auto_claims_a_free_gpu_slot_like_cuda(cuda_gpus, tmp_path):
    assert pick_device("auto", str(tmp_path)) == torch.device("cuda", 0)
    assert pick_device("cuda", str(tmp_path)) == torch.device("cuda", 1)
    with pytest.raises(RuntimeError, match="--resources gpu=2"):
        pick_device("auto", str(tmp_path))
    cuda_gpus.setenv("SLURM_JOB_ID", "7")  # SLURM hands out the GPUs itself: no slot
    assert pick_device("auto", str(tmp_path)) == torch.device("cuda")


def test_auto_in_a_slurm_job_says_when_it_runs_on_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu, "_said", set())
    for name in SLURM_GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    caplog.set_level(logging.INFO, logger="unetflow.gpu")
    assert pick_device("auto") == pick_device("auto") == torch.device("cpu")
    [granted] = caplog.records  # logged once
    assert granted.levelno == logging.WARNING and "granted GPUs (SLURM_JOB_ID=7, SLURM_JOB_GPUS=0" in granted.message
    caplog.clear()
    monkeypatch.delenv("SLURM_JOB_GPUS")  # a job that asked for no GPU
    pick_device("auto")
    assert [(r.levelno, r.message) for r in caplog.records] == [
        (logging.INFO, "device auto: this SLURM job holds no GPU, running on the CPU")]


def test_changing_one_experiment_reruns_only_that_experiment(tmp_path):
    config = tiny_config()
    config["train"].update(epochs=1, iterations_per_epoch=1)
    config["experiments"] = {"unet": {}, "wide": {"train": {"base_width": 12}}}
    snakemake(tmp_path, configfile=write_config(tmp_path, config, "two.yaml"))
    config["experiments"]["wide"]["train"]["lr"] = 0.002
    jobs = scheduled_jobs(tmp_path, configfile=write_config(tmp_path, config, "changed.yaml"))
    assert all("/wide/" in output for rule, output in jobs if rule != "leaderboard")
    unplanned = {rule: jobs for rule, jobs in ONE_EXPERIMENT.items() if rule != "plan"}  # the plan does not use lr
    assert job_counts(tmp_path, config, name="changed.yaml") == unplanned


def test_ensemble_of_experiments_predicts_with_every_member(tmp_path):
    config = tiny_config()
    config["train"].update(epochs=1, iterations_per_epoch=1)  # the folds of an ensemble: test_plan.py
    config["experiments"] = {"a": {}, "b": {"train": {"lr": 0.01}}, "ab": {"predict": {"ensemble": ["a", "b"]}},
                             "abc": {"train": {"lr": 0.02}, "predict": {"ensemble": ["a", "b"]}}}
    snakemake(tmp_path, "--until", "package", configfile=write_config(tmp_path, config))
    package = torch.load(tmp_path / "results" / "abc" / "package" / "abc.pt", weights_only=True)
    assert [model["source"] for model in package["models"]] == ["abc/fold0", "a/fold0", "b/fold0"]
    package = torch.load(tmp_path / "results" / "ab" / "package" / "ab.pt", weights_only=True)
    assert [model["source"] for model in package["models"]] == ["a/fold0", "b/fold0"]  # ab trains as a does
    assert not (tmp_path / "results" / "ab" / "train").exists()
    assert "experiment ab: its plan and models are experiment a's (the same train section); predict.ensemble ['a'] " \
           "trains as it does" in (tmp_path / "results" / "logs" / "ab" / "package.log").read_text()


def test_changed_file_listed_in_a_manifest_reruns_ingest(tmp_path):
    images, masks = write_pairs(tmp_path / "data", count=4)
    rows = [f"images/{image.name},masks/{image.name}" for image in sorted(images.iterdir())]
    (tmp_path / "data" / "cases.csv").write_text("\n".join(["image,mask", *rows]) + "\n")
    config = tiny_config()
    config["data"] = {"manifest": str(tmp_path / "data" / "cases.csv")}
    path = write_config(tmp_path, config)
    snakemake(tmp_path, "--until", "ingest", configfile=path)
    assert "rule ingest" not in snakemake(tmp_path, "--dry-run", "--until", "ingest", configfile=path).stdout
    cv2.imwrite(str(images / "c2.png"), np.full((32, 40), 7, np.uint8))  # new content (a touch alone is not enough)
    output = snakemake(tmp_path, "--dry-run", "--until", "ingest", configfile=path).stdout
    assert "rule ingest" in output and "c2.png" in output
