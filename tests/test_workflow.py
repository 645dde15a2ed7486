"""The whole workflow on tiny demo data: outputs, their columns, rerun scope, and the ISBI 2012 smoke run."""

import re
import shutil
from pathlib import Path

import cv2
import pandas as pd
import pytest
import torch
import yaml

from conftest import (
    REPO,
    SHARED_DATA,
    job_counts,
    scheduled_jobs,
    snakemake,
    tiny_config,
    write_config,
    write_ct_pair,
    write_pairs,
)
from unetflow.net.model import UNet

COLUMNS = {
    "results/data/manifest.parquet": {"id", "image_path", "mask_path", "height", "width", "channels", "dtype",
                                      "label_values", "label_fractions"},
    "results/data/classes.parquet": {"index", "name", "value", "ignore", "nonzero"},
    "results/data/warnings.parquet": {"kind", "file", "value", "detail"},
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
    summary = pd.read_parquet(tiny_run / "results/unet/evaluate/summary.parquet").set_index("class_name")
    log = (tiny_run / "results/logs/unet/evaluate.log").read_text()
    assert re.search(rf"foreground\s+\d+\s+{summary.loc['foreground', 'dice_mean']:.4f}", log), log


def test_leaderboard_reports_the_trained_models_own_traits(tiny_run):
    checkpoint = torch.load(tiny_run / "results/unet/train/fold0/model.pt", weights_only=True)
    model = UNet(**checkpoint["hparams"])
    model.load_state_dict(checkpoint["model"])  # the architecture counted is the one trained
    board = pd.read_parquet(tiny_run / "results/leaderboard.parquet")
    assert (board["parameters"] == sum(parameter.numel() for parameter in model.parameters())).all()
    assert (board["dims"] == checkpoint["hparams"]["dims"]).all()
    assert (board["patch_size"] == "x".join(map(str, checkpoint["patch_size"]))).all()
    assert (board["depth"] == checkpoint["hparams"]["depth"]).all()
    steps = pd.read_parquet(tiny_run / "results/unet/train/fold0/metrics.parquet")["steps"].max()
    assert (board["train_steps"] == steps).all() and steps == 2 * 3  # tiny.yaml: 2 epochs of 3 steps


def scheduled_rules(workdir, config: dict, *args: str) -> set[str]:
    """Rules a run would execute with `config` (the tiny config with changes) and extra arguments."""
    return set(job_counts(workdir, config, *args, name="changed.yaml"))


def refusal(workdir, config: dict) -> str:
    """What Snakemake prints when it refuses `config` before running anything (it must refuse)."""
    result = snakemake(workdir, "--dry-run", configfile=write_config(workdir, config), check=False)
    assert result.returncode != 0
    return result.stderr + result.stdout


def test_nothing_to_do_after_a_run(tiny_run):
    assert scheduled_rules(tiny_run, tiny_config()) == set()


def test_reordered_config_keys_rerun_nothing(tiny_run):
    reordered = {key: dict(reversed(value.items())) if isinstance(value, dict) else value
                 for key, value in reversed(tiny_config().items())}
    assert list(reordered["demo"]) != list(tiny_config()["demo"])
    assert scheduled_rules(tiny_run, reordered) == set()


def test_changed_train_option_reruns_train_predict_evaluate(tiny_run):
    config = tiny_config()
    config["train"]["lr"] = 0.002
    assert scheduled_rules(tiny_run, config) == {"train", "predict", "evaluate", "report", "leaderboard", "package"}


def test_changed_evaluate_option_reruns_evaluate_and_what_uses_it(tiny_run):
    config = tiny_config()
    config["evaluate"] = {"tolerance": 2.0}
    assert scheduled_rules(tiny_run, config) == {"evaluate", "report", "leaderboard"}


def test_changed_preprocess_option_keeps_the_split(tiny_run):
    config = tiny_config()
    config["preprocess"] = {"normalization": "minmax"}
    assert scheduled_rules(tiny_run, config) == {"preprocess", "plan", "train", "package", "predict", "evaluate",
                                                 "report", "leaderboard"}


def test_changed_split_reruns_the_fingerprint_and_preprocessing(tiny_run):
    config = tiny_config()
    config["split"]["seed"] = 5  # other training cases: other normalisation statistics and target spacing
    assert scheduled_rules(tiny_run, config) == {"split", "fingerprint", "preprocess", "plan", "train", "package",
                                                 "predict", "evaluate", "report", "leaderboard"}


def test_forcerun_and_until_as_documented(tiny_run, tmp_path):
    after_train = {"train", "predict", "evaluate", "report", "leaderboard", "package"}
    assert scheduled_rules(tiny_run, tiny_config(), "--forcerun", "train") == after_train
    assert scheduled_rules(tiny_run, tiny_config(), "-R", "evaluate") == {"evaluate", "report", "leaderboard"}
    snakemake(tmp_path, "--until", "split")  # runs up to split and stops
    written = {path.relative_to(tmp_path / "results").parts[0] for path in (tmp_path / "results").iterdir()}
    assert written == {"demo", "data", "split", "logs"} and not (tmp_path / "results/data/fingerprint.json").exists()


def test_ingest_writes_every_warning_to_its_table_and_logs_one_line_per_kind(tmp_path):
    images, masks = write_pairs(tmp_path / "data", count=6, size=(20, 24))
    for mask in list(masks.iterdir()):
        cv2.imwrite(str(mask.with_suffix(".jpg")), cv2.imread(str(mask), cv2.IMREAD_UNCHANGED),
                    [cv2.IMWRITE_JPEG_QUALITY, 50])
        mask.unlink()
    config = tiny_config()
    config["data"] = {"images": str(images), "masks": str(masks), "classes": {"bg": 0, "fg": 255},
                      "lossy_masks": "snap"}
    snakemake(tmp_path, "--until", "ingest", configfile=write_config(tmp_path, config))
    warnings = pd.read_parquet(tmp_path / "results/data/warnings.parquet")
    assert sorted(warnings["kind"].value_counts().items()) == [("snapped_pixels", 6), ("tiny_image", 6)]
    log = (tmp_path / "results/logs/ingest.log").read_text()
    assert log.count("tiny image(s)") == 1 and log.count("snapped to the nearest class (e.g.") == 1
    assert "(all 6 in results/data/warnings.parquet)" in log


def test_config_type_error_names_the_key(tmp_path):
    config = tiny_config()
    config["train"]["lr"] = "fast"
    assert "'fast' is not of type 'number'" in refusal(tmp_path, config)


def test_unknown_config_key_is_an_error(tmp_path):
    config = tiny_config()
    config["train"]["epoch"] = 3
    assert "config key train.epoch is not a setting (did you mean train.epochs?)" in refusal(tmp_path, config)


def test_patch_size_not_fitting_the_depth_is_refused_before_running(tmp_path):
    config = tiny_config()
    config["experiments"] = {"unet": {}, "deep": {"train": {"depth": 4, "patch_size": [40, 40]}}}
    assert "train.patch_size [40, 40] (experiment deep)" in refusal(tmp_path, config)


IMPOSSIBLE_SETTINGS = {  # several problems of config_problems (common.smk) are reported together
    "split_fixed": ({"split": {"fixed": True, "folds": 3}, "preprocess": {"clip_percentiles": [99, 1]}},
                    ["it cannot make split.folds > 1 folds", "split.fixed needs data.manifest",
                     "preprocess.clip_percentiles must be [low, high] with low < high, got [99, 1]"]),
    "split_fractions": ({"split": {"train": 0.5, "val": 0.3, "test": 0, "group_by": "patient",
                                   "group_pattern": "^p\\d+"}},
                        ["split.train + split.val + split.test must be 1",
                         "split.test is 0 but predict.split is test",
                         "split.group_by and split.group_pattern are both set: set one of them"]),
    "augment_name": ({"train": {"augment": {"mirorr": {"p": 0.5}}}}, ["train.augment.mirorr is not a setting (did "
                                                                     "you mean train.augment.mirror?)"]),
    "augment_key": ({"train": {"augment": {"noise": {"sdt": [0, 1]}}}}, ["'sdt' is not one of"]),
    "split_per_experiment": ({"experiments": {"a": {}, "b": {"predict": {"split": "val"}}}},
                             ["experiments.b.predict.split: every experiment predicts the same split"]),
    "ensemble_itself": ({"experiments": {"a": {}, "b": {"predict": {"ensemble": ["a", "b"]}}}},
                        ["predict.ensemble of experiment b: it names the experiment itself"]),
    "experiment_type": ({"experiments": {"a": {"train": {"epochs": "ten"}}}},
                        ["experiments.a (merged over the top-level settings)", "'ten' is not of type 'integer'"]),
}


@pytest.mark.parametrize("case", IMPOSSIBLE_SETTINGS)
def test_impossible_settings_are_refused_before_any_job(tmp_path, case):
    overrides, messages = IMPOSSIBLE_SETTINGS[case]
    config = tiny_config()
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values} if section != "experiments" else values
    output = refusal(tmp_path, config)
    assert all(message in output for message in messages), output[-2000:]


def test_experiments_of_a_config_file_replace_the_default_one(tmp_path):
    config = tiny_config()
    config["experiments"] = {"base": {}, "deep": {"train": {"depth": 3}}}
    planned = {output for _, output in scheduled_jobs(tmp_path, configfile=write_config(tmp_path, config))}
    assert {path.split("/")[1] for path in planned if path.endswith("plan.json")} == {"base", "deep"}


NEEDS_ISBI = pytest.mark.skipif(not (SHARED_DATA / "isbi2012").exists(),
                                reason="../shared/data/isbi2012 is not present")


def on_shared_isbi_data(config_path) -> dict:
    """A shipped ISBI 2012 config with its data paths pointed at ../shared/data/isbi2012."""
    config = yaml.safe_load(config_path.read_text())
    config["data"] = {**config["data"], "images": str(SHARED_DATA / "isbi2012/images"),
                      "masks": str(SHARED_DATA / "isbi2012/masks")}
    return config


@NEEDS_ISBI
def test_isbi2012_smoke(tmp_path):
    """config/isbi2012.yaml on the real data, shortened to one tiny epoch: every stage runs on 512x512 EM slices."""
    config = on_shared_isbi_data(REPO / "config" / "isbi2012.yaml")
    config["train"].update(epochs=1, iterations_per_epoch=2, batch_size=2, base_width=4)
    config["predict"]["mirror"] = False
    snakemake(tmp_path, configfile=write_config(tmp_path, config))
    summary = pd.read_parquet(tmp_path / config["results"] / "unet/evaluate/summary.parquet")
    assert summary["class_name"].tolist() == ["membrane", "cell"] and (summary["n_cases"] == 9).all()


@NEEDS_ISBI
def test_the_isbi_recipes_benchmark_config_is_valid(tmp_path):
    """bench/isbi_recipes.yaml (bench/training.md) passes the config's validation: every experiment trains."""
    config = on_shared_isbi_data(REPO / "bench" / "isbi_recipes.yaml")
    jobs = scheduled_jobs(tmp_path, "--until", "leaderboard", configfile=write_config(tmp_path, config))
    trained = {Path(output).parts[2] for rule, output in jobs if rule == "train"}  # results/isbi_recipes/<name>/...
    assert trained == set(config["experiments"])


@pytest.mark.parametrize("name", ["lr_schedule_isbi", "lr_schedule_dsb2018", "lr_schedule_hippocampus",
                                  "isbi_membrane_class", "isbi_dice_background", "dsb2018_instances",
                                  "hippocampus_fifth", "isbi_width", "augment_isbi", "augment_dsb2018",
                                  "augment_hippocampus", "isbi_steps", "dsb2018_width",
                                  "dsb2018_steps", "isbi_folds", "dsb2018_folds", "dsb2018_clip"])
def test_the_training_benchmark_configs_are_valid(tmp_path, name):
    """The benchmark configs of bench/training.md (lr_schedule_*, augment_*), bench/targets.md (isbi_*,
    hippocampus_fifth) and bench/instances.md (dsb2018_*) pass the config's validation: every experiment trains."""
    config = yaml.safe_load((REPO / "bench" / f"{name}.yaml").read_text())
    for key in ("images", "masks"):
        config["data"][key] = str(SHARED_DATA / Path(config["data"][key]).relative_to("../shared/data"))
    if not Path(config["data"]["images"]).exists():
        pytest.skip("the shared data set is not here")
    jobs = scheduled_jobs(tmp_path, "--until", "leaderboard", configfile=write_config(tmp_path, config))
    trained = {Path(output).parts[2] for rule, output in jobs if rule == "train"}
    assert trained == set(config.get("experiments", ["unet"]))


def test_nifti_volumes_end_to_end(tmp_path):
    """CT-like volumes of different voxel sizes (one rotated) are CT-normalised from the training volumes'
    fingerprint, resampled in-plane to their median spacing and trained as slices; the test volume is predicted back
    on its own grid with its header and evaluated there; infer on the same file writes the same mask."""
    import json

    import nibabel as nib
    import numpy as np

    volumes = {"ct_a": ((48, 44, 5), (0.6, 0.6, 3.0), 0), "ct_b": ((44, 48, 6), (0.8, 0.8, 3.0), 30),
               "ct_c": ((40, 40, 5), (1.2, 1.2, 3.0), 0)}  # the median of any two in-plane spacings is neither's
    truth = {name: write_ct_pair(tmp_path, name, shape, spacing, seed, degrees)
             for seed, (name, (shape, spacing, degrees)) in enumerate(volumes.items())}
    config = tiny_config()
    config["data"] = {"images": str(tmp_path / "images"), "masks": str(tmp_path / "labels"), "slice_axis": 2}
    config["split"] = {"train": 0.34, "val": 0.33, "test": 0.33}
    config["train"].update(depth=2, patch_size=[16, 16])
    snakemake(tmp_path, configfile=write_config(tmp_path, config))
    splits = pd.read_parquet(tmp_path / "results/split/splits.parquet")
    assert (splits.groupby(splits["id"].str[:4])["split"].nunique() == 1).all()  # a volume's slices stay together
    test_volume = splits.loc[splits.split == "test", "id"].iloc[0].split("_z")[0]
    fingerprint = json.loads((tmp_path / "results/data/fingerprint.json").read_text())
    trained = [spacing for name, (_, spacing, _) in volumes.items() if name != test_volume]
    assert fingerprint["normalization"] == "ct" and fingerprint["volumes"] == 2
    assert fingerprint["target_spacing"] == pytest.approx(np.median(trained, axis=0).tolist())
    arrays = pd.read_parquet(tmp_path / "results/preprocess/manifest.parquet")
    resampled = arrays[arrays["id"].str.startswith(test_volume)]
    assert (resampled["height"] != resampled["original_height"]).all()

    labels, affine = truth[test_volume]
    predicted = nib.load(tmp_path / "results/unet/predict/masks" / f"{test_volume}.nii.gz")
    assert predicted.shape == volumes[test_volume][0] and np.allclose(predicted.affine, affine)
    assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1}
    per_case = pd.read_parquet(tmp_path / "results/unet/evaluate/per_case.parquet").set_index("class")
    assert per_case["id"].tolist() == [test_volume, test_volume]
    assert per_case.loc[1, "tp"] + per_case.loc[1, "fn"] == labels.sum()  # scored on the file's own grid
    predicted = np.asarray(predicted.dataobj)

    (tmp_path / "new").mkdir()  # the test volume segmented again as a new image: same labels, same header
    shutil.copy(tmp_path / "images" / f"{test_volume}.nii.gz", tmp_path / "new" / "scan.nii.gz")
    config["infer"] = {"images": str(tmp_path / "new")}
    snakemake(tmp_path, "infer", configfile=write_config(tmp_path, config))
    inferred = next((tmp_path / "results/infer/unet/masks").rglob("scan.nii.gz"))
    assert np.array_equal(np.asarray(nib.load(inferred).dataobj), predicted)
    assert np.allclose(nib.load(inferred).affine, affine)
    summary = pd.read_parquet(tmp_path / "results/infer/unet/summary.parquet").set_index("class_name")
    assert summary.loc["foreground", "physical_unit"] == "mm^3" and summary["kind"].eq("volume").all()
    voxel = np.prod(volumes[test_volume][1])
    assert summary.loc["foreground", "physical_size"] == pytest.approx(summary.loc["foreground", "pixels"] * voxel)
