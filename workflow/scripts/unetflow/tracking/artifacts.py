"""The report and the package of an experiment added to the MLflow runs and TensorBoard event files of its folds'
training (each fold's train/fold<k>/tracking.json says where they are): to MLflow the report's figures and tables and
the test metrics of the evaluation summary, or the package file; to TensorBoard the report's figures (PNG) as images,
in an event file of their own beside the training's, which the next report replaces. A fold trained without MLflow
(or TensorBoard) tracking gets nothing there."""

import json
import math
import re
import time
from pathlib import Path

import pandas as pd

from unetflow.tracking.mlflow_client import client_for
from unetflow.tracking.store import mlflow_problem

SUMMARY_STATISTIC = "_mean"  # the test metrics logged: the per-class means of the evaluation summary
REPORT_EVENTS = ".report"  # the suffix of the event file of the report's figures
FIGURE_SUFFIX = ".png"


def tracked(records: list[str], sink: str) -> list:
    """What the folds' tracking.json files say of `sink` ('mlflow': their runs, 'tensorboard': their event file
    folders), for the folds tracked to it."""
    found = []
    for path in records:
        with open(path) as file:
            record = json.load(file)
        if record[sink] is not None:
            found.append(record[sink])
    return found


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
    runs = tracked(records, "mlflow")
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


def log_figures_to_tensorboard(records: list[str], files: list[str]) -> int:
    """Add the PNG figures among `files` as images (tag report/<file stem>) to the TensorBoard event files of every
    fold in `records` (tracking.json files); the number of folds."""
    figures = [Path(path) for path in files if str(path).lower().endswith(FIGURE_SUFFIX)]
    folders = tracked(records, "tensorboard")
    for folder in folders:
        write_figure_events(Path(folder), figures)
    return len(folders)


def write_figure_events(folder: Path, figures: list[Path]) -> None:
    """Write the figures as one event (step 0) to a new report event file in `folder`, replacing an earlier
    report's. TensorBoard's own event writer and protocol buffers, no PyTorch: the PNG files go in as they are."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    for old in folder.glob(f"events.out.tfevents.*{REPORT_EVENTS}"):
        old.unlink()
    values = [Summary.Value(tag=f"report/{figure.stem}", image=Summary.Image(**png_header(figure),
                                                                             encoded_image_string=figure.read_bytes()))
              for figure in figures]
    writer = EventFileWriter(str(folder), filename_suffix=REPORT_EVENTS)
    writer.add_event(Event(wall_time=time.time(), step=0, summary=Summary(value=values)))
    writer.close()


def png_header(path: Path) -> dict[str, int]:
    """Height, width and colour space (1 grey, 2 grey and alpha, 3 RGB, 4 RGBA: its channels) of an image file."""
    from PIL import Image

    with Image.open(path) as image:
        return dict(height=image.height, width=image.width, colorspace=len(image.getbands()))
