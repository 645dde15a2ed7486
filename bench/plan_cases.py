"""Shared by the training benchmarks: the workflow's `train` defaults, and the plan of training cases held in memory.

The workflow plans an experiment from its stored sources (`unetflow.plan.plan.make_plan`, rule `plan`) and trains
with the planned values merged over its train section (workflow/scripts/train.py). `planned_config` does the same for
generated (image (C, H, W), labels (H, W)) cases: it describes them as the preprocess table and the fingerprint would
(one 2D source per case, on its own grid, objects measured slice by slice as `fingerprint_data` measures them).
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from unetflow.config_schema import resolved  # noqa: E402
from unetflow.gpu import pick_device  # noqa: E402
from unetflow.plan.fingerprint import class_voxels, plane_diameters  # noqa: E402
from unetflow.plan.plan import make_plan, settings_of  # noqa: E402

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def train_defaults() -> dict:
    """The `train` section's defaults from the config schema (where the workflow's defaults live)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    properties = resolved(schema["$defs"]["train"], schema)["properties"]
    return {key: entry.get("default") for key, entry in properties.items()}


def case_sources(cases, num_classes: int) -> pd.DataFrame:
    """The rows of the preprocess table that 2D (image (C, H, W), labels (H, W)[, ...]) cases, or volumes of 1 mm
    voxels (image (C, Z, H, W), labels (Z, H, W)), would have."""
    rows = []
    for index, (image, labels, *_) in enumerate(cases):
        volume = labels.ndim == 3
        slices, height, width = labels.shape if volume else (1, *labels.shape)
        rows.append(dict(id=f"case{index}", kind="volume" if volume else "image", slices=slices, height=height,
                         width=width, original_height=height, channels=int(image.shape[0]),
                         spacing=[1.0, 1.0, 1.0] if volume else None, class_voxels=class_voxels(labels, num_classes)))
    return pd.DataFrame(rows)


def case_fingerprint(cases) -> dict:
    """The part of the fingerprint summary a plan reads: the 90th percentile of the objects' in-plane diameters (the
    resolution of 2D images is not planned: the cases are trained as they are)."""
    diameters = np.concatenate([plane_diameters(labels if labels.ndim == 3 else labels[None])
                                for _, labels, *_ in cases])
    return dict(object_diameter_p90=round(float(np.percentile(diameters, 90)), 1) if diameters.size else 0.0)


def planned_config(cfg: dict, cases, num_classes: int) -> tuple[dict, dict]:
    """(`cfg` with the planned values filled, the plan) for training on `cases`, as the workflow's plan and train
    rules make them (explicit values of `cfg` win, as in the workflow)."""
    plan = make_plan(cfg, case_sources(cases, num_classes), case_fingerprint(cases), num_classes,
                     pick_device(cfg["device"]))
    return {**cfg, **settings_of(plan)}, plan
