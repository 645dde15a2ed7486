"""Shared test helpers: small data sets on disk and running the workflow in a temporary folder."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from unetflow.ingest import DataSpec, check_data_set

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_pairs(folder: Path, count: int = 4, size=(32, 40), values=(0, 255), seed: int = 0) -> tuple[Path, Path]:
    """`count` random grey PNG images with masks holding `values`, in folder/images and folder/masks."""
    rng = np.random.default_rng(seed)
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        cv2.imwrite(str(images / f"c{index}.png"), rng.integers(0, 256, size, dtype=np.uint8))
        cv2.imwrite(str(masks / f"c{index}.png"), rng.choice(np.asarray(values, np.uint8), size))
    return images, masks


def build_manifest(images=None, masks=None, mask_suffix: str = "auto", classes=None, threads: int = 1, **options):
    """Ingest's (manifest, class table) of a data set given as arguments (`options`: other keys of the data section)."""
    return check_data_set(DataSpec(images=images, masks=masks, mask_suffix=mask_suffix, classes=classes, **options),
                          threads)


def snakemake(workdir: Path, *args: str, configfile: Path = REPO / "tests" / "tiny.yaml",
              check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` with the given config file and extra arguments."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--cores", "2", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def tiny_config() -> dict:
    """The tiny demo configuration of the end-to-end tests, as a dict to change."""
    return yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())


def write_config(folder: Path, config: dict, name: str = "config.yaml") -> Path:
    """`config` as a YAML file in `folder` (keys in their dict order: the order of data.classes means something)."""
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole workflow run once on the tiny demo config; returns its working directory."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir)
    return workdir
