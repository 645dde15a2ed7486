"""The whole workflow on tiny demo data: outputs, their columns, rerun scope, and the ISBI 2012 smoke run."""

import re

import cv2
import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, SHARED_DATA, snakemake

COLUMNS = {
    "results/data/manifest.parquet": {"id", "image_path", "mask_path", "height", "width", "channels", "dtype",
                                      "label_values", "label_fractions"},
    "results/data/classes.parquet": {"index", "name", "value"},
    "results/preprocess/manifest.parquet": {"id", "array_path", "height", "width", "channels"},
    "results/split/splits.parquet": {"id", "split"},
    "results/unet/train/fold0/metrics.parquet": {"epoch", "train_loss", "val_loss", "val_dice", "lr", "seconds",
                                           "images_per_s"},
    "results/unet/evaluate/per_case.parquet": {"id", "class", "class_name", "tp", "fp", "fn", "gt_empty",
                                               "pred_empty", "dice", "iou"},
    "results/unet/evaluate/summary.parquet": {"class", "class_name", "n_cases", "dice_mean", "dice_median",
                                              "dice_std", "iou_mean", "iou_median", "iou_std"},
}


@pytest.mark.parametrize("table", sorted(COLUMNS))
def test_tables_have_their_columns(tiny_run, table):
    assert COLUMNS[table] <= set(pd.read_parquet(tiny_run / table).columns)


def test_training_metrics_one_row_per_epoch(tiny_run):
    metrics = pd.read_parquet(tiny_run / "results/unet/train/fold0/metrics.parquet")
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics["train_loss"].notna().all() and metrics["val_dice"].between(0, 1).all()


def test_checkpoints_load_safely(tiny_run):
    for name in ("model.pt", "last.pt"):
        checkpoint = torch.load(tiny_run / "results/unet/train/fold0" / name, weights_only=True)
        assert checkpoint["hparams"]["num_classes"] == 2 and checkpoint["patch_size"] == [64, 64]


def test_predictions_cover_the_test_split_in_input_encoding(tiny_run):
    splits = pd.read_parquet(tiny_run / "results/split/splits.parquet")
    test_ids = sorted(splits.loc[splits.split == "test", "id"])
    masks = sorted((tiny_run / "results/unet/predict/masks").glob("*.png"))
    assert [m.stem for m in masks] == test_ids
    for mask in masks:
        values = set(cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).ravel().tolist())
        assert values <= {0, 255} and cv2.imread(str(mask)).shape[:2] == (64, 64)


def test_evaluation_rows_per_case_and_class(tiny_run):
    per_case = pd.read_parquet(tiny_run / "results/unet/evaluate/per_case.parquet")
    assert len(per_case) == 2 * 2 and set(per_case["class_name"]) == {"background", "foreground"}
    assert "background" in (tiny_run / "results/logs/unet/evaluate.log").read_text()


def scheduled_jobs(workdir, config: dict) -> set[str]:
    """Rules a dry run would execute with `config` (the tiny config with changes)."""
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    output = snakemake(workdir, "--dry-run", "--quiet", "rules", configfile=path).stdout
    if "Job stats:" not in output:
        return set()
    table = output.split("Job stats:")[1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total", "all"}


def tiny_config() -> dict:
    return yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())


def test_nothing_to_do_after_a_run(tiny_run):
    assert scheduled_jobs(tiny_run, tiny_config()) == set()


def test_changed_train_option_reruns_train_predict_evaluate(tiny_run):
    config = tiny_config()
    config["train"]["lr"] = 0.002
    assert scheduled_jobs(tiny_run, config) == {"train", "predict", "evaluate", "report", "leaderboard"}


def test_changed_evaluate_option_reruns_evaluate_and_what_uses_it(tiny_run):
    config = tiny_config()
    config["evaluate"] = {"tolerance": 2.0}
    assert scheduled_jobs(tiny_run, config) == {"evaluate", "report", "leaderboard"}


def test_changed_preprocess_option_keeps_the_split(tiny_run):
    config = tiny_config()
    config["preprocess"] = {"normalization": "minmax"}
    assert scheduled_jobs(tiny_run, config) == {"preprocess", "train", "predict", "evaluate", "report", "leaderboard"}


def test_config_type_error_names_the_key(tmp_path):
    config = tiny_config()
    config["train"]["lr"] = "fast"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--dry-run", configfile=path, check=False)
    assert result.returncode != 0 and "'fast' is not of type 'number'" in result.stderr + result.stdout


def test_unknown_config_key_is_an_error(tmp_path):
    config = tiny_config()
    config["train"]["epoch"] = 3
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--dry-run", configfile=path, check=False)
    assert result.returncode != 0 and "'epoch' was unexpected" in result.stderr + result.stdout


@pytest.mark.skipif(not (SHARED_DATA / "isbi2012").exists(), reason="../shared/data/isbi2012 is not present")
def test_isbi2012_smoke(tmp_path):
    """config/isbi2012.yaml on the real data, shortened to one tiny epoch: every stage runs on 512x512 EM slices."""
    config = yaml.safe_load((REPO / "config" / "isbi2012.yaml").read_text())
    config["data"] = {**config["data"], "images": str(SHARED_DATA / "isbi2012/images"),
                      "masks": str(SHARED_DATA / "isbi2012/masks")}
    config["train"].update(epochs=1, iterations_per_epoch=2, batch_size=2, base_width=4)
    config["predict"]["mirror"] = False
    path = tmp_path / "isbi.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # the order of data.classes is the class order
    snakemake(tmp_path, configfile=path)
    summary = pd.read_parquet(tmp_path / config["results"] / "unet/evaluate/summary.parquet")
    assert summary["class_name"].tolist() == ["membrane", "cell"] and (summary["n_cases"] == 9).all()
