"""Prediction: apply one trained model or an ensemble of them to the preprocessed cases of a split, and write
label masks (and optionally the class probabilities) in the input's geometry and encoding."""

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from unetflow.infer.ensemble import load_models, predict_unit, refuse_3d_models_on_2d_units
from unetflow.instances.objects import object_table
from unetflow.instances.targets import instance_target
from unetflow.io.labels import class_values
from unetflow.io.prediction_files import OBJECTS_FILE, write_prediction, write_probabilities, write_unit_objects
from unetflow.io.store import load_case
from unetflow.io.volumes import prediction_units

log = logging.getLogger("unetflow.infer.predict")


def checkpoint_list(paths: str | Sequence[str]) -> list[str]:
    """The checkpoint paths as a list (Snakemake passes a single-file input as a string)."""
    return [paths] if isinstance(paths, str) else list(paths)


def predict_cases(cases: pd.DataFrame, arrays: pd.Series, checkpoints: Sequence[str], classes: pd.DataFrame,
                  cfg: dict, device: torch.device, out_dir: str, target_spacing=None) -> None:
    """Predict every case (manifest rows; `arrays`: stored case path by id) with the mean softmax of the
    `checkpoints`, unit by unit (a 2D case, or a volume's slices; 3D models on `target_spacing` along the slice
    axis, see `slice_axis_target`), and write masks (and with cfg['save_probabilities'] the probabilities) to
    out_dir."""
    models, patches = load_models(checkpoints, device)
    units, target, objects = prediction_units(cases), instance_target(classes), []
    refuse_3d_models_on_2d_units(models, checkpoints, units)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for number, (name, rows) in enumerate(units, start=1):
        images = [load_case(arrays[case_id])[0] for case_id in rows["id"]]
        labels, probabilities = predict_unit(models, images, patches, cfg, device, len(class_values(classes)), rows,
                                             target_spacing)
        if target:
            objects += write_unit_objects(probabilities, rows, target, cfg["min_object_size"], out_dir, name)[1]
        else:
            write_prediction(labels, classes, out_dir, name, rows)
        if cfg["save_probabilities"]:
            for case_id, probs in zip(rows["id"], probabilities):
                write_probabilities(probs, out_dir, case_id)
        log.info("predicted %d/%d: %s", number, len(units), name)
    if target:
        object_table(objects).to_parquet(Path(out_dir, OBJECTS_FILE))
