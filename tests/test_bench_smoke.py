"""Smoke test of the training throughput benchmark: it runs end to end on tiny sizes and reports both loops."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "train_throughput.py"


def test_train_throughput_runs_on_tiny_sizes():
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "2", "--batch", "2", "--size", "32",
               "--rounds", "1", "--cases", "4", "--base-width", "4", "--threads", "1", "--variants",
               "--profile"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("ours:") and "images/s" in line for line in lines)
    assert any(line.strip().startswith("monai:") and "images/s" in line for line in lines)
    flops_ratio = float(next(line for line in lines if line.startswith("forward FLOPs")).split()[-1])
    assert 0.9 <= flops_ratio <= 1.1, "the two models no longer have matched FLOPs"
    assert any(line.startswith("speed-up ours / MONAI") for line in lines)
    assert sum(line.startswith("model step") for line in lines) == 3
    assert sum(line.startswith("profile") for line in lines) == 2
