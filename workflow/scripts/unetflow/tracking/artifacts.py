"""The report and the package of an experiment added to the MLflow runs of its folds' training (each fold's
train/fold<k>/tracking.json says where its run is): the report's figures and tables and the test metrics of the
evaluation summary, or the package file. A fold trained without MLflow tracking gets nothing; TensorBoard keeps
scalars only, so it gets nothing either."""

import json
import math
import re
import time

import pandas as pd

from unetflow.tracking.mlflow_client import client_for
from unetflow.tracking.store import mlflow_problem

SUMMARY_STATISTIC = "_mean"  # the test metrics logged: the per-class means of the evaluation summary


def tracked_runs(records: list[str]) -> list[dict]:
    """The MLflow runs of the folds' tracking.json files (those of folds tracked to MLflow)."""
    runs = []
    for path in records:
        with open(path) as file:
            record = json.load(file)
        if record["mlflow"] is not None:
            runs.append(record["mlflow"])
    return runs


def evaluation_metrics(summary: pd.DataFrame) -> dict[str, float]:
    """The evaluation summary's per-class means as {test/<class>/<metric>: value} (finite values only)."""
    metrics = {}
    for row in summary.to_dict("records"):
        name = re.sub(r"[^\w\-. /]", "_", str(row["class_name"]))  # the characters MLflow allows in a key
        metrics |= {f"test/{name}/{key}": float(value) for key, value in row.items()
                    if key.endswith(SUMMARY_STATISTIC) and math.isfinite(value)}
    return metrics


def log_to_runs(records: list[str], folder: str, files: list[str], timeout: float,
                metrics: dict[str, float] | None = None) -> int:
    """Log `files` under artifact folder `folder` (and `metrics`) to the MLflow run of every fold in `records`
    (tracking.json files); the number of runs. Each store is checked first: an unreachable server fails within
    `timeout` seconds (tracking.timeout) instead of MLflow's minutes of retries."""
    runs = tracked_runs(records)
    for run in runs:
        problem = mlflow_problem(run["tracking_uri"], timeout)
        if problem:
            raise ValueError(f"the training's MLflow run {run['run_id']}: {problem}")
        log_run_files(client_for(run["tracking_uri"]), run["run_id"], folder, files, metrics or {})
    return len(runs)


def log_run_files(client, run_id: str, folder: str, files: list[str], metrics: dict[str, float]) -> None:
    """Log files (under `folder`) and metrics to one run."""
    from mlflow.entities import Metric

    for path in files:
        client.log_artifact(run_id, path, folder)
    if metrics:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])
