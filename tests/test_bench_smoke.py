"""Smoke test of the training throughput benchmark: it runs end to end on tiny sizes and reports both loops."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import bench_module

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "train_throughput.py"


def test_train_throughput_runs_on_tiny_sizes():
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "2", "--batch", "2", "--size", "32",
               "--rounds", "1", "--cases", "4", "--base-width", "4", "--threads", "1", "--variants",
               "--profile"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("ours:") and "images/s" in line for line in lines)
    assert any(line.strip().startswith("monai:") and "images/s" in line for line in lines)
    flops_ratio = float(next(line for line in lines if line.startswith("forward FLOPs")).split()[-1])
    assert 0.9 <= flops_ratio <= 1.1, "the two models no longer have matched FLOPs"
    assert any(line.startswith("speed-up ours / MONAI") for line in lines)
    assert sum(line.startswith("model step") for line in lines) == 3
    assert sum(line.startswith("profile") for line in lines) == 2


def test_infer_throughput_runs_on_tiny_sizes():
    script = SCRIPT.with_name("infer_throughput.py")
    command = [sys.executable, str(script), "--images", "3", "--size", "64", "--patch", "32", "--depth", "2",
               "--base-width", "4", "--threads", "1", "--breakdown", "2", "--rounds", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("whole infer path:") and "images/s" in line for line in lines)
    difference = float(next(line for line in lines if line.startswith("largest |ours - MONAI|")).split()[-1])
    assert difference < 1e-4, "the two sliding windows no longer compute the same softmax"
    assert any(line.startswith("tiled prediction: ours") for line in lines)


def test_predict3d_vs_monai_runs_on_tiny_sizes_and_both_agree():
    script = SCRIPT.with_name("predict3d_vs_monai.py")
    command = [sys.executable, str(script), "--size", "8", "20", "24", "--tile", "8", "16", "16", "--depth", "2",
               "--base-width", "4", "--rounds", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "s/volume" in line]
    assert len(rows) == 4 and any(row.startswith("MONAI (same model)") for row in rows)
    assert all(float(row.split()[-1]) < 1e-5 for row in rows)  # float32 blends of the same softmax
    assert any(line.startswith("ours / MONAI at equal output") for line in result.stdout.splitlines())


def test_volume_preprocessing_runs_on_tiny_volumes():
    command = [sys.executable, str(SCRIPT.with_name("volume_preprocessing.py")), "--volumes", "3", "--shape", "24",
               "24", "3", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "normalisation ct" in result.stdout and "round-trip Dice of the lesion" in result.stdout


def test_validation_share_validates_fewer_cases_with_the_default_share(tmp_path):
    script = SCRIPT.with_name("validation_share.py")
    command = [sys.executable, str(script), "--count", "40", "--sizes", "96x64,64x64", "--epochs", "1",
               "--iterations", "2", "--threads", "1", "--workdir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    whole, default = pd.read_parquet(tmp_path / "validation_share.parquet").itertuples()
    assert whole.val_cases_per_epoch == 6 and default.val_cases_per_epoch < 6  # 15 % of 40 cases
    assert 0 < default.run_val_share < 1 and 0 < whole.run_val_share < 1


def test_cpu_batch_runs_on_tiny_sizes():
    script = SCRIPT.with_name("cpu_batch.py")
    command = [sys.executable, str(script), "--size", "32", "--batches", "1,2", "--depths", "2", "--base-width", "4",
               "--rounds", "1", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert sum(line.startswith("depth 2 batch") and "images/s" in line for line in result.stdout.splitlines()) == 2


def test_volume_startup_runs_on_tiny_volumes(tmp_path):
    script = SCRIPT.with_name("volume_startup.py")
    command = [sys.executable, str(script), "--workdir", str(tmp_path), "--volumes", "3", "--shape", "32", "32", "6",
               "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("preprocess from nothing", "preprocess job alone", "train job alone", "nothing to do"):
        assert any(line.startswith(name) for line in lines), name
    assert any(line.startswith("target spacing") and "anisotropic" in line for line in lines)
    assert (tmp_path / "results/unet/train/fold0/model.pt").exists()


def test_slide_readers_runs_on_a_tiny_svs_and_all_readers_agree():
    command = [sys.executable, str(SCRIPT.with_name("slide_readers.py")), "--size", "1024", "--regions", "2",
               "--region", "128", "--rounds", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "openslide vendor: aperio" in lines[0]  # the generated file is an SVS to OpenSlide too
    assert sum(line.endswith("MPP 0.25 µm") for line in lines) == 3
    agreement = [line for line in lines if "largest |difference| to tifffile" in line]
    assert len(agreement) == 2 and all(line.endswith("to tifffile 0") for line in agreement)
    assert sum("/ tifffile: wall" in line for line in lines) == 3


def test_slide_vs_monai_runs_on_a_tiny_slide_with_equal_masks():
    command = [sys.executable, str(SCRIPT.with_name("slide_vs_monai.py")), "--size", "256", "--region", "128",
               "--rounds", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("ours: reading") and "computing" in line and "writing" in line for line in lines)
    assert sum(line.startswith(("time ours / monai:", "time ours / monai_wsi:")) for line in lines) == 2
    differing = float(next(line for line in lines if line.startswith("differing mask pixels:")).split()[3])
    assert differing < 1e-3, "the two pipelines no longer segment alike"  # float near-ties may flip a pixel


def test_edge_errors_counts_errors_by_their_distance_to_the_other_side(tiny_run):
    """bench/edge_errors.py: of two true 1-px lines one found and one predicted 1 px to its right, and a false blob 4 px
    away; on the tiny run the class's pooled Dice is the evaluation's."""
    import numpy as np

    module = bench_module("edge_errors")
    truth, predicted = np.zeros((8, 12), np.uint8), np.zeros((8, 12), np.uint8)
    truth[:, [3, 6]], predicted[:, [3, 7]], predicted[0:2, 10:12] = 1, 1, 1
    counts = module.slice_edge_errors(truth, predicted, 1)
    assert counts == {"tp": 8, "false": 12, "missed": 8, "false_1": 8, "missed_1": 8, "false_2": 8, "missed_2": 8}
    lines = module.report(counts).splitlines()
    assert lines[0].startswith("Dice 0.4444") and lines[1].endswith("Dice without them 0.8000")
    run = subprocess.run([sys.executable, str(SCRIPT.with_name("edge_errors.py")), "results", "unet"], cwd=tiny_run,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    rows = pd.read_parquet(tiny_run / "results/unet/evaluate/per_case.parquet").query("`class` == 1")
    tp, fp, fn = (int(rows[column].sum()) for column in ("tp", "fp", "fn"))
    assert run.stdout.startswith(f"Dice {2 * tp / (2 * tp + fp + fn):.4f}: {fp} false and {fn} missed pixels\n")


def test_decision_threshold_scores_the_argmax_as_the_evaluation_does(tiny_run):
    """bench/decision_threshold.py on the tiny run: a row per threshold for validation and test, and at 0.5 (the
    argmax of two classes) the test Dice of the foreground is the evaluation's pooled one."""
    run = subprocess.run([sys.executable, str(SCRIPT.with_name("decision_threshold.py")), "results", "unet"],
                         cwd=tiny_run, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["threshold", "class_val", "other_val", "class_test", "other_test"] and len(lines) == 11
    argmax = next(line.split() for line in lines if line.split()[0] == "0.5000")
    rows = pd.read_parquet(tiny_run / "results/unet/evaluate/per_case.parquet").query("`class` == 1")
    tp, fp, fn = (int(rows[column].sum()) for column in ("tp", "fp", "fn"))
    assert abs(float(argmax[3]) - 2 * tp / (2 * tp + fp + fn)) < 0.005
    assert lines[-1].startswith("validation chooses ")
