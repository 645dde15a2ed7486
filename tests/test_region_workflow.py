"""Region-based training end to end: generated nested blobs trained as regions (data.regions) through every stage,
scored per region, their package predicting without the config; regions that cannot be trained refused before any
job."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import NESTED_CLASSES, NESTED_REGIONS, snakemake, tiny_config, write_config, write_nested_pairs
from unetflow.infer.predictor import Predictor
from unetflow.io.prediction_files import read_probabilities

pytestmark = pytest.mark.xdist_group("region_run")  # one worker trains the run all tests of the module read
REGION_NAMES = list(NESTED_REGIONS)
DICE_BARS = {"whole": 0.85, "core": 0.7, "enhancing": 0.5}  # 0.95, 0.86, 0.71 when written (CPU, 2 threads)


def region_config(workdir) -> dict:
    """The tiny config on 12 generated nested-blob images, trained as the regions of NESTED_REGIONS for 300 steps."""
    images, masks = write_nested_pairs(workdir / "data", count=12)
    config = tiny_config()
    config["data"] = {"images": str(images), "masks": str(masks), "classes": NESTED_CLASSES,
                      "regions": NESTED_REGIONS}
    config["split"] = {"train": 0.5, "val": 0.17, "test": 0.33}
    config["train"].update(epochs=30, iterations_per_epoch=10, patch_size=[64, 64])
    return config


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    """The whole workflow trained on regions; its working directory."""
    workdir = tmp_path_factory.mktemp("region_run")
    snakemake(workdir, configfile=write_config(workdir, region_config(workdir)))
    return workdir


def test_regions_are_the_network_outputs(region_run):
    regions = pd.read_parquet(region_run / "results/data/regions.parquet")
    assert regions["name"].tolist() == REGION_NAMES and regions["value"].tolist() == [2, 1, 3]
    plan = json.loads((region_run / "results/unet/plan.json").read_text())
    assert plan["num_classes"] == 3
    metrics = pd.read_parquet(region_run / "results/unet/train/fold0/metrics.parquet")
    assert metrics["val_dice"].between(0, 1).all() and metrics["val_dice"].iloc[-1] > metrics["val_dice"].iloc[0]


def test_predicted_masks_hold_only_the_declared_labels(region_run):
    masks = sorted((region_run / "results/unet/predict/masks").glob("*.png"))
    values = set(np.unique(np.concatenate([cv2.imread(str(m), cv2.IMREAD_UNCHANGED).ravel() for m in masks])))
    assert len(masks) == 4 and values <= set(NESTED_CLASSES.values()) and len(values) > 2


def test_each_region_is_scored_and_learned(region_run):
    per_case = pd.read_parquet(region_run / "results/unet/evaluate/per_case.parquet")
    assert per_case.groupby("id")["class_name"].apply(list).map(tuple).unique().tolist() == [
        ("background", *REGION_NAMES)]
    summary = pd.read_parquet(region_run / "results/unet/evaluate/summary.parquet").set_index("class_name")
    assert all(summary.loc[name, "dice_mean"] > bar for name, bar in DICE_BARS.items()), summary["dice_mean"]
    board = pd.read_parquet(region_run / "results/leaderboard.parquet")
    assert board.loc[board["class"] > 0, "class_name"].tolist() == REGION_NAMES
    assert (region_run / "results/unet/report/metrics.html").exists()


def test_the_package_predicts_the_regions_without_the_config(region_run, tmp_path):
    predictor = Predictor.load(region_run / "results/unet/package/unet.pt", "cpu")
    assert predictor.package.regions.names == tuple(REGION_NAMES)
    written = sorted((region_run / "results/unet/predict/masks").glob("*.png"))[0]
    image = cv2.imread(str(region_run / "data/images" / written.name), cv2.IMREAD_UNCHANGED)
    labels, probs = predictor.predict_array(image)
    assert probs.shape == (3, 64, 64)
    assert np.array_equal(np.asarray(list(NESTED_CLASSES.values()))[labels],
                          cv2.imread(str(written), cv2.IMREAD_UNCHANGED))
    source = pd.DataFrame([dict(id="n", image_path=str(region_run / "data/images" / written.name), kind="image",
                                slice_axis=0, slices=1)])
    summary, _ = predictor.predict_sources(source, tmp_path, save_probabilities=True)
    np.testing.assert_allclose(read_probabilities(tmp_path / "n.npz"), probs, atol=1e-3)  # region probabilities
    assert summary["class_name"].tolist() == ["background", *REGION_NAMES]  # counted per region, as scored
    regions = predictor.package.regions.masks(labels)
    assert summary["pixels"].tolist() == [int((~regions.any(0)).sum()), *[int(mask.sum()) for mask in regions]]
    assert summary["confidence"].dropna().between(0.5, 1).all()


def test_regions_that_cannot_be_written_are_refused_before_any_job(tmp_path):
    config = region_config(tmp_path)
    config["data"]["regions"] = dict(reversed(NESTED_REGIONS.items()))
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert "data.regions: region 'enhancing' [3] would never be written" in result.stderr + result.stdout
