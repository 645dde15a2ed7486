"""Tracking of one training run (an experiment's fold) in MLflow and TensorBoard, as config section `tracking` says.
The training loop calls `start`, `log_epoch` and `finish`; with tracking off they do nothing, and neither library is
imported.

MLflow: one experiment per unetflow experiment (named `tracking.prefix` + its name), one run per fold (named
fold<k>, tagged with the experiment, fold and results folder); params: the train section as configured (`train.*`)
and the plan (`plan.*`: each setting's value and source, the device, traits and network size; plan.json itself, with
the reasons, as an artifact); metrics: each epoch's row of metrics.parquet at step = epoch (an epoch that did not
validate leaves out its NaN scores), then the final summary. TensorBoard: the same scalars and a text table of the
params. A resumed training continues its MLflow run and its event files.
"""

import json
import math
import time
from pathlib import Path

from unetflow.tracking.mlflow_client import artifact_location, client_for, experiment_id
from unetflow.tracking.store import absolute_uri, local_path, refuse_unusable_store, store_kind, tensorboard_dir

BATCH = 100  # MLflow takes at most 100 params per request


def text(value) -> str:
    """A param value as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def flat(value, prefix: str) -> dict[str, str]:
    """A nested dict as {dotted.key: text}."""
    if isinstance(value, dict) and value:
        return {key: item for name, nested in value.items() for key, item in flat(nested, f"{prefix}.{name}").items()}
    return {prefix: text(value)}


def run_params(train: dict, plan: dict) -> dict[str, str]:
    """The params of a run: the train section as configured and the plan (each setting's value and source; the
    reasons and the resolutions tried stay in plan.json)."""
    params = flat(train, "train")
    params |= flat({key: value for key, value in plan.items() if key not in ("settings", "resolutions_tried")}, "plan")
    for key, entry in plan["settings"].items():
        params |= {f"plan.{key}": text(entry["value"]), f"plan.{key}.source": entry["source"]}
    return params


def finite(values: dict) -> dict[str, float]:
    """The numeric values that are finite (an epoch without validation has NaN scores), as floats."""
    return {key: float(value) for key, value in values.items() if math.isfinite(value)}


class MlflowRun:
    """One fold's run in an MLflow store."""

    def __init__(self, uri: str, experiment: str, tags: dict):
        self.uri, self.experiment, self.tags = absolute_uri(uri), experiment, tags
        self.client = self.experiment_id = self.run_id = None

    def start(self, params: dict, plan: dict, previous: dict | None) -> None:
        """Open the run (the interrupted one when resuming, if the store still holds it) and log params and plan."""
        from mlflow.entities import Param

        if store_kind(self.uri) == "sqlite":
            local_path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = client_for(self.uri)
        self.experiment_id = experiment_id(self.client, self.experiment, artifact_location(self.uri, self.experiment))
        self.run_id = self.resumed_run(previous) or self.client.create_run(
            self.experiment_id, tags=self.tags, run_name=self.tags["unetflow.run"]).info.run_id
        items = [Param(key, value) for key, value in params.items()]
        for first in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[first:first + BATCH])
        self.client.log_dict(self.run_id, plan, "plan.json")

    def resumed_run(self, previous: dict | None) -> str | None:
        """The run of the interrupted training (`previous`: its saved `state`), running again; None for a fresh
        training or when the store no longer holds the run."""
        from mlflow.exceptions import MlflowException

        run_id = (previous or {}).get("mlflow_run_id")
        if run_id is None:
            return None
        try:
            self.client.update_run(run_id, status="RUNNING")
        except MlflowException:
            return None
        return run_id

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)

    def state(self) -> dict:
        return {"mlflow_run_id": self.run_id}

    def record(self) -> dict:
        return {"mlflow": dict(tracking_uri=self.uri, experiment_id=self.experiment_id, run_id=self.run_id)}


class TensorBoardLog:
    """One fold's event files; a fresh (not resumed) training replaces those of an earlier one."""

    def __init__(self, folder: Path):
        self.folder, self.writer = Path(folder).absolute(), None

    def start(self, params: dict, plan: dict, previous: dict | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if previous is None:
            for old in self.folder.glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = SummaryWriter(str(self.folder), flush_secs=30)
        if previous is None:
            table = "\n".join(["| param | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in params.items())])
            self.writer.add_text("params", table)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()

    def state(self) -> dict:
        return {}

    def record(self) -> dict:
        return {"tensorboard": str(self.folder)}


class Tracker:
    """The tracking of one training run: `start`, `log_epoch`, `finish` (and, as a context manager around the
    training, marking the run failed when it raises). Without sinks (tracking off) it does nothing."""

    def __init__(self, sinks=(), params: dict | None = None, plan: dict | None = None):
        self.sinks, self.params, self.plan, self.step = list(sinks), params or {}, plan or {}, 0

    def start(self, previous: dict | None = None) -> None:
        """Open the run; `previous`: the `state` saved with the resume state of an interrupted training, if any."""
        for sink in self.sinks:
            sink.start(self.params, self.plan, previous)

    def log_epoch(self, row: dict) -> None:
        """An epoch's metrics row (its `epoch` is the step)."""
        self.step = row["epoch"]
        values = finite({key: value for key, value in row.items() if key != "epoch"})
        for sink in self.sinks:
            sink.log(self.step, values)

    def finish(self, summary: dict) -> None:
        """Log the final summary (at the last epoch's step) and close the run as finished."""
        for sink in self.sinks:
            sink.log(self.step, finite(summary))
            sink.close("FINISHED")

    def state(self) -> dict:
        """What a resumed training needs to continue the run."""
        return {key: value for sink in self.sinks for key, value in sink.state().items()}

    def record(self) -> dict:
        """Where the run went (train/fold<k>/tracking.json; the report and package steps log to it)."""
        return {"mlflow": None, "tensorboard": None} | {k: v for sink in self.sinks for k, v in sink.record().items()}

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            for sink in self.sinks:
                sink.close("FAILED")


def tracker_for(tracking: dict, results: str, experiment: str, fold: int, train: dict, plan: dict) -> Tracker:
    """The tracker of one fold's training; ValueError naming the key when its store cannot be written to (checked
    now, before any training time is spent)."""
    refuse_unusable_store(tracking, results)
    sinks = []
    if tracking["mlflow"] is not None:
        tags = {"unetflow.experiment": experiment, "unetflow.fold": str(fold), "unetflow.run": f"fold{fold}",
                "unetflow.results": str(Path(results, experiment, "train", f"fold{fold}").absolute())}
        sinks.append(MlflowRun(tracking["mlflow"], tracking["prefix"] + experiment, tags))
    folder = tensorboard_dir(tracking, results, experiment, fold)
    if folder is not None:
        sinks.append(TensorBoardLog(folder))
    return Tracker(sinks, run_params(train, plan), plan)
