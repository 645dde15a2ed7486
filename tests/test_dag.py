"""The DAG fans out as configured (experiments x folds), and GPU jobs running together get different GPUs."""

import subprocess
import sys
import textwrap

import cv2
import numpy as np
import torch

from conftest import REPO, job_counts, scheduled_jobs, snakemake, tiny_config, write_config, write_pairs
from unetflow.gpu import claim_slot

ONE_EXPERIMENT = {"plan": 1, "train": 1, "package": 1, "predict": 1, "evaluate": 1, "report": 1, "leaderboard": 1}


def test_experiments_times_folds(tmp_path):
    config = tiny_config()
    config["split"].update(folds=3)
    config["experiments"] = {"base": {}, "deep": {"train": {"depth": 3}}, "dice": {"train": {"loss": "dice"}}}
    counts = job_counts(tmp_path, config)
    assert counts["train"] == 9 and counts["plan"] == counts["predict"] == counts["evaluate"] == 3
    assert counts["leaderboard"] == 1 and counts["split"] == 1 and counts["preprocess"] == 1


def test_adding_an_experiment_runs_only_that_experiment(tiny_run):
    config = tiny_config()
    config["experiments"] = {"unet": {}, "wide": {"train": {"base_width": 12}}}
    jobs = scheduled_jobs(tiny_run, configfile=write_config(tiny_run, config, "two.yaml"))
    assert all("/wide/" in log for rule, log in jobs if rule != "leaderboard")
    assert job_counts(tiny_run, config, name="two.yaml") == ONE_EXPERIMENT


def test_an_instance_setting_outside_the_instance_mode_reruns_nothing(tiny_run):
    config = tiny_config()
    config["data"] = {**config.get("data", {}), "instance_target": "three_class"}
    assert job_counts(tiny_run, config) == {}
    config["data"]["jpeg_masks"] = "snap"  # a data setting ingest uses does rerun it
    assert job_counts(tiny_run, config).get("ingest") == 1


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


def test_changing_one_experiment_reruns_only_that_experiment(tmp_path):
    config = tiny_config()
    config["train"].update(epochs=1, iterations_per_epoch=1)
    config["experiments"] = {"unet": {}, "wide": {"train": {"base_width": 12}}}
    snakemake(tmp_path, configfile=write_config(tmp_path, config, "two.yaml"))
    config["experiments"]["wide"]["train"]["lr"] = 0.002
    jobs = scheduled_jobs(tmp_path, configfile=write_config(tmp_path, config, "changed.yaml"))
    assert all("/wide/" in log for rule, log in jobs if rule != "leaderboard")
    unplanned = {rule: jobs for rule, jobs in ONE_EXPERIMENT.items() if rule != "plan"}  # the plan does not use lr
    assert job_counts(tmp_path, config, name="changed.yaml") == unplanned


def test_ensemble_of_experiments_predicts_with_every_member(tmp_path):
    config = tiny_config()
    config["split"].update(folds=2)
    config["train"].update(epochs=1, iterations_per_epoch=1)
    config["experiments"] = {"a": {}, "b": {"train": {"lr": 0.01}}, "ab": {"predict": {"ensemble": ["a", "b"]}}}
    snakemake(tmp_path, "--until", "package", configfile=write_config(tmp_path, config))
    package = torch.load(tmp_path / "results" / "ab" / "package" / "ab.pt", weights_only=True)
    assert [model["source"] for model in package["models"]] == [f"{e}/fold{f}" for e in ("ab", "a", "b") for f in "01"]


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
