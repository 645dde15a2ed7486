"""bench/gpu_check.sh: without CUDA it stops with a clear message; its steps run end to end on the CPU (dry run)."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, write_pairs

SCRIPT = REPO / "bench" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: the check would run for minutes")
def test_without_cuda_it_fails_loudly(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2
    assert "gpu_check: FAILED" in result.stderr and "sees no CUDA GPU" in result.stderr


def test_dry_run_runs_every_step_on_the_cpu(tmp_path):
    write_pairs(tmp_path / "data", count=10, size=(48, 48))
    env = dict(os.environ, GPU_CHECK_DRY_RUN="1", TMPDIR=str(tmp_path), PYTHON=sys.executable)  # not PATH's python
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data")], capture_output=True, text=True,
                            timeout=600, check=False, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for figure in ("speed-up ours / MONAI", "at equal output (both float32)", "at equal masks",
                   "budget: 0.05 minutes", "test Dice cell:", "peak memory", "gpu_check: done"):
        assert figure in out, figure
