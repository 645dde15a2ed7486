"""Objects wider than a patch: 2D images scaled by `preprocess.scale` (planned from the objects' widths), and
predictions brought back onto each image's own size."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import build_manifest, snakemake, tiny_config, write_config
from unetflow.plan.fingerprint import SMALLEST_SIDE, WIDE_OBJECT, fingerprint_data, object_sizes, planned_scale
from unetflow.plan.resolution import SLIDES_KEEP_SIZE, no_resolution_choice


def flat_table(widths, shape=(1, 960, 1280)) -> pd.DataFrame:
    return pd.DataFrame({"kind": "image", "object_width_p90": widths, "shape": [list(shape)] * len(widths)})


def test_object_width_is_the_inscribed_disc_so_a_thin_network_is_thin():
    disc = np.zeros((300, 300), np.uint8)
    cv2.circle(disc, (150, 150), 100, 1, -1)
    assert object_sizes([disc], planar=True)["object_width_p90"] == pytest.approx(200, abs=2)
    grid = np.zeros((300, 300), np.uint8)
    grid[::30], grid[:, ::30] = 1, 1  # one connected membrane-like network across the whole image
    sizes = object_sizes([grid], planar=True)
    assert sizes["objects"] == 1 and sizes["object_width_p90"] < 4  # 2 px lines, 2.8 where they cross


def test_planned_scale_brings_wide_objects_to_the_limit_and_keeps_the_rest():
    assert planned_scale(flat_table([40.0, 90.0, 120.0]))[0] == 1.0
    scale, reason = planned_scale(flat_table([500.0, 640.0, 700.0]))
    assert scale == pytest.approx(np.floor(WIDE_OBJECT / 640 * 100) / 100) and "640 px" in reason
    assert planned_scale(flat_table([2000.0], shape=(1, 200, 300)))[0] == pytest.approx(SMALLEST_SIDE / 200)
    assert planned_scale(pd.DataFrame({"kind": ["volume"], "object_width_p90": [np.nan], "shape": [[9, 9, 9]]}))[0] \
        == 1.0


def write_wide_objects(folder, sizes) -> None:
    """One image per (height, width) with an ellipse over 128 px wide, brighter than a noisy background."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index, (height, width) in enumerate(sizes):
        mask = np.zeros((height, width), np.uint8)
        cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 255, -1)
        image = (60 + 100 * (mask > 0) + rng.normal(0, 10, mask.shape)).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / "images" / f"w{index}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"w{index}.png"), mask)


def test_wide_objects_train_scaled_and_predict_on_each_image_s_own_size(tmp_path):
    sizes = [(420, 500), (400, 520), (440, 480), (410, 510)]
    write_wide_objects(tmp_path, sizes)
    config = tiny_config()
    config["data"] = {"images": str(tmp_path / "images"), "masks": str(tmp_path / "masks")}
    config["train"].update(depth=2, patch_size=[32, 32])
    snakemake(tmp_path, configfile=write_config(tmp_path, config))
    fingerprint = json.loads((tmp_path / "results/data/fingerprint.json").read_text())
    assert 0 < fingerprint["scale"] < 1 and "images scaled by" in fingerprint["scale_reason"]
    arrays = pd.read_parquet(tmp_path / "results/preprocess/manifest.parquet")
    assert (arrays["height"] == (arrays["original_height"] * fingerprint["scale"]).round()).all()
    assert (arrays["width"] < arrays["original_width"]).all()
    per_case = pd.read_parquet(tmp_path / "results/unet/evaluate/per_case.parquet")
    for case_id, rows in per_case.groupby("id"):
        height, width = sizes[int(case_id[1:])]
        predicted = cv2.imread(str(tmp_path / "results/unet/predict/masks" / f"{case_id}.png"), cv2.IMREAD_UNCHANGED)
        assert predicted.shape == (height, width) and set(np.unique(predicted)) <= {0, 255}
        truth = cv2.imread(str(tmp_path / "masks" / f"{case_id}.png"), cv2.IMREAD_UNCHANGED) > 0
        objects = rows.set_index("class").loc[1]
        assert objects["tp"] + objects["fn"] == truth.sum()  # scored on the file's own size

    test_id = per_case["id"].iloc[0]
    (tmp_path / "new").mkdir()  # a test image segmented again as a new image: the same mask
    (tmp_path / "new" / "scan.png").write_bytes((tmp_path / "images" / f"{test_id}.png").read_bytes())
    config["infer"] = {"images": str(tmp_path / "new")}
    snakemake(tmp_path, "infer", configfile=write_config(tmp_path, config))
    inferred = cv2.imread(str(next((tmp_path / "results/infer/unet/masks").rglob("scan.png"))), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(inferred, cv2.imread(str(tmp_path / f"results/unet/predict/masks/{test_id}.png"),
                                               cv2.IMREAD_UNCHANGED))



def test_regions_of_slides_keep_their_size_so_slides_are_predicted_at_the_size_they_trained_at(tmp_path):
    write_wide_objects(tmp_path, [(420, 500), (400, 520)])
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    splits = pd.DataFrame({"id": manifest["id"], "split": "train", "fold": 0})
    assert fingerprint_data(manifest, classes, splits)[1]["scale"] < 1  # plain images of wide objects: scaled
    as_slides = manifest.assign(slide_level=1, pixel_size_um=2.0)  # as ingest records regions of slides
    summary = fingerprint_data(as_slides, classes, splits)[1]
    assert (summary["scale"], summary["scale_reason"], summary["slides"]) == (1.0, SLIDES_KEEP_SIZE, True)
    traits = dict(boundary_distance=40.0, slides=True)  # the plan's traits of such a fingerprint
    assert no_resolution_choice(traits, instances=False) == SLIDES_KEEP_SIZE
