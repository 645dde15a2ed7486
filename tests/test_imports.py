"""Job start-up: a stage script loads only the heavy libraries its stage uses (each import costs every job of the
stage CPU seconds; torch alone about 1.5 s)."""

import re
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = REPO / "workflow" / "scripts"
USERS = {"torch": {"plan", "train", "predict", "package", "infer_check", "infer_shard",
                   "infer_slide_part", "infer_slide"}, "sklearn": {"split"},
         "mlflow": set(), "tensorboard": set()}  # tracking loads them in a job that tracks, not on import
SCRIPTS_WITHOUT_TORCH = sorted(path.stem for path in SCRIPTS.glob("*.py") if path.stem not in USERS["torch"])


def loaded_libraries(script: str) -> set[str]:
    """The libraries of USERS that importing `script`'s imports loads, in a fresh interpreter."""
    imports = re.findall(r"^(?:from|import) ([\w.]+)", (SCRIPTS / f"{script}.py").read_text(), re.M)
    code = ";".join(f"import {name}" for name in imports) + f";import sys;print(*(sys.modules.keys() & {set(USERS)}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("script", SCRIPTS_WITHOUT_TORCH)
def test_script_loads_only_the_libraries_of_its_stage(script):
    assert loaded_libraries(script) == {library for library, users in USERS.items() if script in users}
