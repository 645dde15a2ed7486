"""Per-rule conda environments: every rule names one, each parses, holds what its script imports, and agrees with
the pip pins in requirements.txt (no conda channel can be reached here, so the files are checked, not built)."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SCRIPTS = REPO / "workflow" / "scripts"
# import name -> pip name, and pip name -> conda-forge name where they differ
PIP_NAME = {"cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn", "skimage": "scikit-image",
            "yaml": "pyyaml", "mlflow": "mlflow-skinny", "openslide": "openslide-python"}
CONDA_NAME = {"torch": "pytorch", "opencv-python-headless": "py-opencv", "matplotlib": "matplotlib-base"}


def rules() -> dict[str, dict]:
    """rule name -> {conda, script} parsed from workflow/rules/*.smk."""
    found = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":")[0].strip()
            conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", block)
            found[name] = dict(conda=conda and (smk.parent / conda.group(1)).resolve(),
                               script=script and (smk.parent / script.group(1)).resolve())
    return found


def imported_packages(script: Path, seen=None) -> set[str]:
    """Top-level third-party modules a script imports, following imports of the unetflow library."""
    seen = set() if seen is None else seen
    if script in seen:
        return set()
    seen.add(script)
    packages = set()
    for node in ast.walk(ast.parse(script.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in names:
            top = name.split(".")[0]
            if top == "unetflow":
                module = SCRIPTS.joinpath(*name.split("."))
                target = module / "__init__.py" if module.is_dir() else module.with_suffix(".py")
                packages |= imported_packages(target, seen)
            elif top not in sys.stdlib_module_names and top != "snakemake":
                packages.add(PIP_NAME.get(top, top))
    return packages


def env_packages(env_file: Path) -> dict[str, str]:
    """Package name -> pinned version of a conda env file (conda and pip entries, pip names for pip entries)."""
    pins = {}
    for dep in yaml.safe_load(env_file.read_text())["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            name, _, version = re.split(r"(==|=)", entry, maxsplit=1) if "=" in entry else (entry, "", "")
            pins[name.strip()] = version.strip()
    return pins


def pip_pins() -> dict[str, str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


RULES = {name: rule for name, rule in rules().items() if rule["script"]}


def test_rules_found():
    assert {"demo_data", "ingest", "preprocess", "split", "train", "predict", "evaluate"} <= set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_env_exists_and_parses(rule):
    env = RULES[rule]["conda"]
    assert env is not None and env.parent == REPO / "envs", f"rule {rule} names no env file under envs/"
    spec = yaml.safe_load(env.read_text())
    assert spec["channels"][0] == "conda-forge" and "defaults" not in spec["channels"]
    assert any(str(d).startswith("python=") for d in spec["dependencies"])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule_env_holds_every_imported_package(rule):
    env = env_packages(RULES[rule]["conda"])
    missing = [p for p in imported_packages(RULES[rule]["script"]) if p not in env and CONDA_NAME.get(p) not in env]
    assert not missing, f"rule {rule}: {RULES[rule]['conda'].name} lacks {missing}"


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_agree_with_requirements(env_file):
    pins = pip_pins()
    conda_to_pip = {conda: pip for pip, conda in CONDA_NAME.items()}
    for name, version in env_packages(env_file).items():
        pip_name = conda_to_pip.get(name, name)
        if pip_name in pins:
            assert version == pins[pip_name], \
                f"{env_file.name}: {name}={version} but requirements.txt has {pins[pip_name]}"
        else:
            assert name in ("python", "pip"), f"{env_file.name}: {name} is not pinned in requirements.txt"


def test_import_scan_sees_through_the_library():
    assert {"torch", "numpy", "pandas"} <= imported_packages(SCRIPTS / "train.py")
