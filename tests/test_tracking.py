"""Experiment tracking (unetflow.tracking): what a training run logs to MLflow (SQLite and folder stores) and
TensorBoard, read back through their own readers; resumed runs; the report and package steps; and the refusal of
stores that cannot be written to, fast."""

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pandas as pd
import pytest
from test_train import TINY_CFG, TINY_PLAN, tiny_case

from conftest import REPO
from unetflow.tracking.artifacts import evaluation_metrics, log_figures_to_tensorboard, log_to_runs
from unetflow.tracking.store import absolute_uri, store_problems, tensorboard_dir
from unetflow.tracking.tracker import tracker_for

PLAN = dict(TINY_PLAN, traits=dict(sources=4, median_size=[48, 48]), parameters=1234, resolutions_tried=[],
            settings=dict(patch_size=dict(value=[32, 32], source="planned", reason="median image"),
                          dims=dict(value=2, source="config", reason="set in the config")))
TRAIN = dict(TINY_CFG, patch_size=None, augment={"noise": {"p": 0.3}})  # the section as configured


def tracking(mlflow=None, tensorboard=False, prefix="", timeout=2.0) -> dict:
    return dict(mlflow=mlflow, tensorboard=tensorboard, prefix=prefix, timeout=timeout)


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def tensorboard_events(folder):
    """TensorBoard's own reader of the event files in `folder`, loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def trained(tmp_path, tracker, epochs: int = 3) -> pd.DataFrame:
    """A tiny training with `tracker`; its metrics."""
    from unetflow.train.train import Trainer

    rng = np.random.default_rng(0)
    trainer = Trainer(dict(TINY_CFG, epochs=epochs), TINY_PLAN, [tiny_case(rng) for _ in range(4)],
                      [tiny_case(rng) for _ in range(2)], list("abcd"), tmp_path / "state.pt", logging.getLogger(),
                      tracker=tracker)
    with tracker:
        return trainer.run(tmp_path / "model.pt", tmp_path / "last.pt")


def test_training_is_tracked_to_sqlite_and_tensorboard(tmp_path):
    config = tracking(f"sqlite:///{tmp_path}/store/mlflow.db", True, prefix="lab/")
    tracker = tracker_for(config, str(tmp_path / "results"), "unet", 1, TRAIN, PLAN)
    metrics = trained(tmp_path, tracker)
    record = tracker.record()

    client = mlflow_client(record["mlflow"]["tracking_uri"])
    run = client.get_run(record["mlflow"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "lab/unet" and run.info.status == "FINISHED"
    assert run.info.run_name == "fold1" and run.data.tags["unetflow.experiment"] == "unet"
    assert run.data.tags["unetflow.fold"] == "1"
    params = run.data.params
    assert params["train.lr"] == "0.001" and params["train.patch_size"] == "null"
    assert params["train.augment.noise.p"] == "0.3" and params["train.optimizer"] == "adam"
    assert params["plan.patch_size"] == "[32, 32]" and params["plan.patch_size.source"] == "planned"
    assert params["plan.device.type"] == "cpu" and params["plan.traits.median_size"] == "[48, 48]"
    assert params["plan.parameters"] == "1234" and "plan.resolutions_tried" not in params
    for key in ("train_loss", "val_dice", "lr", "images_per_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2, 3]
        assert np.allclose([m.value for m in history], metrics[key])
    best = torch_checkpoint(tmp_path / "model.pt")
    assert run.data.metrics["best_val_dice"] == pytest.approx(best["val_dice"])
    assert run.data.metrics["best_epoch"] == best["epoch"] and run.data.metrics["steps"] == 18
    plan_file = client.download_artifacts(run.info.run_id, "plan.json", str(tmp_path))
    assert json.loads(open(plan_file).read())["settings"]["patch_size"]["reason"] == "median image"
    assert str(tmp_path / "store" / "mlflow-artifacts") in run.info.artifact_uri  # beside the database

    folder = tmp_path / "results" / "unet" / "tensorboard" / "fold1"
    assert record["tensorboard"] == str(folder)
    events = tensorboard_events(folder)
    assert [event.step for event in events.Scalars("train_loss")] == [1, 2, 3]
    assert np.allclose([event.value for event in events.Scalars("train_loss")], metrics["train_loss"])
    assert np.allclose([event.value for event in events.Scalars("lr")], metrics["lr"])
    assert events.Scalars("best_val_dice")[0].value == pytest.approx(best["val_dice"])
    table = events.Tensors("params/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| train.lr | 0.001 |" in table and "| plan.patch_size | [32, 32] |" in table


def torch_checkpoint(path):
    import torch

    return torch.load(path, weights_only=True)


def test_epochs_without_validation_log_no_scores(tmp_path):
    tracker = tracker_for(tracking(f"sqlite:///{tmp_path}/m.db"), str(tmp_path), "unet", 0, TRAIN, PLAN)
    tracker.start()
    tracker.log_epoch(dict(epoch=1, steps=6, train_loss=0.9, val_loss=float("nan"), val_dice=float("nan"), lr=1e-3))
    tracker.log_epoch(dict(epoch=2, steps=12, train_loss=0.7, val_loss=0.5, val_dice=0.6, lr=5e-4))
    client, run_id = mlflow_client(f"sqlite:///{tmp_path}/m.db"), tracker.record()["mlflow"]["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "val_dice")] == [2]
    assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == [0.9, 0.7]
    assert client.get_run(run_id).info.status == "RUNNING"


def test_a_folder_store_receives_the_same(tmp_path):
    store = tmp_path / "mlruns"
    tracker = tracker_for(tracking(str(store)), str(tmp_path), "unet", 0, TRAIN, PLAN)
    metrics = trained(tmp_path, tracker, epochs=2)
    run_id = tracker.record()["mlflow"]["run_id"]
    history = mlflow_client(str(store)).get_metric_history(run_id, "train_loss")
    assert np.allclose([m.value for m in history], metrics["train_loss"])
    assert tracker.record()["tensorboard"] is None


def test_a_resumed_training_continues_its_run_and_a_fresh_one_replaces_the_event_files(tmp_path):
    config = tracking(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "tb"))
    first = tracker_for(config, str(tmp_path), "unet", 0, TRAIN, PLAN)
    first.start()
    first.log_epoch(dict(epoch=1, train_loss=0.9))
    saved = first.state()  # as the resume state holds it; the job is killed
    resumed = tracker_for(config, str(tmp_path), "unet", 0, TRAIN, PLAN)
    resumed.start(saved)
    resumed.log_epoch(dict(epoch=2, train_loss=0.8))
    resumed.finish(dict(best_val_dice=0.5))
    run_id = first.record()["mlflow"]["run_id"]
    assert resumed.record()["mlflow"]["run_id"] == run_id
    client = mlflow_client(f"sqlite:///{tmp_path}/m.db")
    assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == [0.9, 0.8]
    assert client.get_run(run_id).info.status == "FINISHED"
    folder = tensorboard_dir(config, str(tmp_path), "unet", 0)
    assert folder == tmp_path / "tb" / "unet" / "fold0"
    assert [e.value for e in tensorboard_events(folder).Scalars("train_loss")] == pytest.approx([0.9, 0.8])

    fresh = tracker_for(config, str(tmp_path), "unet", 0, TRAIN, PLAN)
    fresh.start()  # a new training of the fold: a new run, and only its own event files
    fresh.log_epoch(dict(epoch=1, train_loss=0.4))
    fresh.finish({})
    assert fresh.record()["mlflow"]["run_id"] != run_id
    assert [e.value for e in tensorboard_events(folder).Scalars("train_loss")] == pytest.approx([0.4])
    gone = tracker_for(config, str(tmp_path), "unet", 0, TRAIN, PLAN)
    gone.start({"mlflow_run_id": "0" * 32})  # a resume state whose run the store does not hold: a new run
    assert gone.record()["mlflow"]["run_id"] not in (run_id, fresh.record()["mlflow"]["run_id"], "0" * 32)


def test_a_failing_training_marks_its_run_failed(tmp_path):
    tracker = tracker_for(tracking(f"sqlite:///{tmp_path}/m.db"), str(tmp_path), "unet", 0, TRAIN, PLAN)
    with pytest.raises(RuntimeError), tracker:
        tracker.start()
        raise RuntimeError("out of memory")
    run = mlflow_client(f"sqlite:///{tmp_path}/m.db").get_run(tracker.record()["mlflow"]["run_id"])
    assert run.info.status == "FAILED"


def test_report_and_package_are_logged_to_every_folds_run(tmp_path):
    config, records = tracking(f"sqlite:///{tmp_path}/m.db"), []
    for fold in (0, 1):
        tracker = tracker_for(config, str(tmp_path), "unet", fold, TRAIN, PLAN)
        tracker.start()
        tracker.finish({})
        records.append(tmp_path / f"tracking{fold}.json")
        records[-1].write_text(json.dumps(tracker.record()))
    untracked = tmp_path / "untracked.json"  # a fold trained before tracking was turned on
    untracked.write_text(json.dumps({"mlflow": None, "tensorboard": None}))
    figure, package = tmp_path / "curves.png", tmp_path / "unet.pt"
    figure.write_bytes(b"png")
    package.write_bytes(b"package")
    summary = pd.DataFrame(dict(class_name=["background", "tumour (core)"], dice_mean=[0.99, 0.8],
                                dice_std=[0.0, 0.1], hd95_mean=[1.0, float("nan")]))
    assert evaluation_metrics(summary) == {"test/background/dice_mean": 0.99, "test/background/hd95_mean": 1.0,
                                           "test/tumour _core_/dice_mean": 0.8}
    assert log_to_runs([*records, untracked], "report", [figure], 2.0, evaluation_metrics(summary)) == 2
    assert log_to_runs(records, "package", [package], 2.0) == 2
    client = mlflow_client(f"sqlite:///{tmp_path}/m.db")
    for record in records:
        run_id = json.loads(record.read_text())["mlflow"]["run_id"]
        assert [a.path for a in client.list_artifacts(run_id, "report")] == ["report/curves.png"]
        downloaded = client.download_artifacts(run_id, "package/unet.pt", str(tmp_path / run_id))
        assert open(downloaded, "rb").read() == b"package"
        assert client.get_run(run_id).data.metrics["test/tumour _core_/dice_mean"] == 0.8
    assert log_to_runs([untracked], "package", [package], 2.0) == 0


def test_report_figures_go_to_every_folds_tensorboard_as_images_replacing_the_last_reports(tmp_path):
    from PIL import Image

    config, records = tracking(tensorboard=True), []
    for fold in (0, 1):
        tracker = tracker_for(config, str(tmp_path), "unet", fold, TRAIN, PLAN)
        tracker.start()
        tracker.finish({"best_val_dice": 0.5})
        records.append(tmp_path / f"tracking{fold}.json")
        records[-1].write_text(json.dumps(tracker.record()))
    untracked = tmp_path / "untracked.json"
    untracked.write_text(json.dumps({"mlflow": None, "tensorboard": None}))
    figures = [tmp_path / "curves.png", tmp_path / "overlays.png", tmp_path / "metrics.html"]
    Image.new("RGB", (40, 30), (200, 10, 10)).save(figures[0])
    Image.new("RGBA", (20, 10)).save(figures[1])
    figures[2].write_text("<table></table>")
    for _ in range(2):  # a rerun of the report replaces its figures
        assert log_figures_to_tensorboard([*records, untracked], list(map(str, figures))) == 2
    for fold in (0, 1):
        folder = tensorboard_dir(config, str(tmp_path), "unet", fold)
        assert len(list(folder.glob("events.out.tfevents.*.report"))) == 1
        events = tensorboard_events(folder)
        assert sorted(events.Tags()["images"]) == ["report/curves", "report/overlays"]
        curves, overlays = events.Images("report/curves"), events.Images("report/overlays")
        assert len(curves) == 1 and (curves[0].width, curves[0].height) == (40, 30)
        assert (overlays[0].width, overlays[0].height) == (20, 10)
        assert curves[0].encoded_image_string == figures[0].read_bytes()
        assert events.Scalars("best_val_dice")[0].value == 0.5  # the training's event file is kept


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_server_is_refused_fast_naming_the_key(tmp_path):
    start = time.monotonic()
    problems = store_problems(tracking(f"http://127.0.0.1:{closed_port()}"), str(tmp_path))
    assert len(problems) == 1 and problems[0].startswith("config key tracking.mlflow: the MLflow server http://")
    assert time.monotonic() - start < 2
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        problems = store_problems(tracking(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5), ".")
    assert "did not answer within 0.5 s (tracking.timeout)" in problems[0] and time.monotonic() - start < 3
    with pytest.raises(ValueError, match="config key tracking.mlflow"):
        tracker_for(tracking(f"http://127.0.0.1:{closed_port()}"), str(tmp_path), "unet", 0, TRAIN, PLAN)


class NotFound(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_a_server_that_answers_at_all_is_accepted(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    assert store_problems(tracking(f"http://127.0.0.1:{server.server_address[1]}"), str(tmp_path)) == []
    thread.join(5)
    server.server_close()


def test_unwritable_places_and_unknown_stores_are_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    problems = store_problems(tracking(f"sqlite:///{blocker}/sub/m.db", str(blocker / "tb")), str(tmp_path))
    assert [p.split(":")[0] for p in problems] == ["config key tracking.mlflow", "config key tracking.tensorboard"]
    assert all(f"{blocker} is a file" in problem for problem in problems)
    assert "is not writable" in store_problems(tracking("/proc/unetflow-mlruns"), str(tmp_path))[0]  # even for root
    assert "not a store unetflow tracks to" in store_problems(tracking("postgresql://db/mlflow"), ".")[0]
    assert "names a folder" in store_problems(tracking(f"sqlite:///{tmp_path}"), ".")[0]
    assert store_problems(tracking(), "/proc/results") == []  # off: nothing is checked
    assert store_problems(tracking("sqlite:///new/m.db", True), str(tmp_path)) == []  # created when needed


def test_local_store_uris_are_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///stores/m.db") == f"sqlite:///{tmp_path}/stores/m.db"
    assert absolute_uri("mlruns") == str(tmp_path / "mlruns")
    assert absolute_uri("http://tracking:5000/") == "http://tracking:5000"


OFF_RUN = """
import json, logging, sys
from pathlib import Path
import numpy as np
from unetflow.tracking.tracker import tracker_for
from unetflow.train.train import Trainer
out, cfg, plan, train = Path(sys.argv[1]), *map(json.loads, sys.argv[2:])
tracker = tracker_for(dict(mlflow=None, tensorboard=False, prefix="", timeout=2), str(out), "unet", 0, train, plan)
rng = np.random.default_rng(0)
cases = [((rng.random((1, 48, 48))).astype(np.float32), (rng.random((48, 48)) > 0.7).astype(np.uint8)) for _ in "abc"]
with tracker:
    Trainer(cfg, plan, cases[:2], cases[2:], ["a", "b"], out / "state.pt", logging.getLogger(), tracker=tracker).run(
        out / "model.pt", out / "last.pt")
print(tracker.record(), sorted(sys.modules.keys() & {"mlflow", "tensorboard"}))
"""


def test_tracking_off_does_nothing_and_imports_neither_library(tmp_path):
    arguments = [str(tmp_path), *(json.dumps(value) for value in (dict(TINY_CFG, epochs=1), PLAN, TRAIN))]
    result = subprocess.run([sys.executable, "-c", OFF_RUN, *arguments], cwd=REPO / "workflow" / "scripts",
                            capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "{'mlflow': None, 'tensorboard': None} []"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.pt", "model.pt"]
