"""Experiment tracking through the workflow: a tiny run tracked to an SQLite store and TensorBoard, with the report
and the package in its run and the report's figures in its event files; changing the tracking section reruns
nothing; an unreachable store is refused before any job."""

import json
import socket

import numpy as np
import pandas as pd
from PIL import Image

from conftest import job_counts, snakemake, tiny_config, write_config


def test_a_tracked_run_holds_its_epochs_report_and_package(tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config()
    config["tracking"] = {"mlflow": "sqlite:///store/mlflow.db", "tensorboard": True, "prefix": "tiny-"}
    snakemake(tmp_path, configfile=write_config(tmp_path, config))
    fold = tmp_path / "results/unet/train/fold0"
    record = json.loads((fold / "tracking.json").read_text())
    assert record["mlflow"]["tracking_uri"] == f"sqlite:///{tmp_path}/store/mlflow.db"
    client = MlflowClient(record["mlflow"]["tracking_uri"])
    run = client.get_run(record["mlflow"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "tiny-unet" and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["plan.dims.source"] == "planned"
    assert run.data.tags["unetflow.results"] == str(fold)
    metrics = pd.read_parquet(fold / "metrics.parquet")
    history = client.get_metric_history(run.info.run_id, "val_dice")
    assert np.allclose([m.value for m in history], metrics["val_dice"])
    summary = pd.read_parquet(tmp_path / "results/unet/evaluate/summary.parquet")
    foreground = summary.iloc[-1]
    assert run.data.metrics[f"test/{foreground['class_name']}/dice_mean"] == foreground["dice_mean"]
    artifacts = {a.path for folder in ("report", "package") for a in client.list_artifacts(run.info.run_id, folder)}
    assert artifacts == {"report/training_curves.png", "report/metric_distributions.png", "report/overlays.png",
                         "report/metrics.html", "package/unet.pt"}
    events = EventAccumulator(record["tensorboard"])
    events.Reload()
    assert record["tensorboard"] == str(tmp_path / "results/unet/tensorboard/fold0")
    assert np.allclose([e.value for e in events.Scalars("train_loss")], metrics["train_loss"])
    for name in ("training_curves", "metric_distributions", "overlays"):  # the report's figures, as images
        with Image.open(tmp_path / f"results/unet/report/{name}.png") as figure:
            assert [(e.width, e.height) for e in events.Images(f"report/{name}")] == [figure.size]

    config["tracking"] = {"tensorboard": str(tmp_path / "elsewhere")}  # tracking is no reason to train again
    assert job_counts(tmp_path, config) == {}


def test_an_unreachable_store_is_refused_before_any_job(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tiny_config()
    config["tracking"] = {"mlflow": f"http://127.0.0.1:{port}", "timeout": 1}
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0 and not (tmp_path / "results").exists()
    message = f"config key tracking.mlflow: the MLflow server http://127.0.0.1:{port} did not answer"
    assert message in result.stdout + result.stderr
