"""The resolution 2D images train and predict at, planned against the budget (`train.resolution`): fewer passes
over the training pixels than the target lower it, the finest class and the image size bound it, predictions come
back at each image's own size."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from test_plan import stored, train_section

from conftest import snakemake, tiny_config, write_config
from unetflow.io.store import save_source
from unetflow.plan.fingerprint import boundary_distances, finest_boundary_distance
from unetflow.plan.plan import make_plan, planned_settings
from unetflow.plan.resolution import (
    TARGET_PASSES,
    few_passes,
    plan_resolution,
    resolution_trial,
    thin_structure_loss,
    undertrained_note,
)
from unetflow.train.sampler import validation_cases
from unetflow.train.schedule import Budget
from unetflow.train.timing import step_seconds
from unetflow.train.validation import validation_scores

CPU = dict(type="cpu", name="cpu", memory_bytes=None)
LARGE = dict(cases=600, median_size=[512, 640], class_shares=[0.8, 0.2], object_diameter_p90=100.0,
             boundary_distance=20.0, pixels=600 * 512 * 640)  # many large frames with large objects


def settings_at(traits: dict) -> dict:
    return planned_settings(train_section(), traits, 2, None, CPU)[0]


def pixel_time(settings: dict) -> float:
    """A step time proportional to the pixels of the batch: 1 s for 4 patches of 256 x 256."""
    return settings["batch_size"] * np.prod(settings["patch_size"]) / (4 * 256 * 256)


def test_class_boundary_distance_tells_thin_classes_from_wide_ones():
    plane = np.zeros((1, 120, 120), np.uint8)
    plane[0, 20:24] = 1  # a band 4 px wide: distances 1, 2, 2, 1
    disc = np.zeros((120, 120), np.uint8)
    cv2.circle(disc, (60, 70), 30, 1, -1)
    plane[0][disc > 0] = 2
    background, band, wide = boundary_distances(plane, 3)
    assert band == 1.5 and wide == pytest.approx(0.29 * 30, rel=0.1) and background > wide
    assert boundary_distances(plane, 4)[3] is None  # a class the source lacks
    table = pd.DataFrame({"class_boundary_distance": [[9.0, 1.5, 8.0], [11.0, None, 10.0], None]})
    assert finest_boundary_distance(table) == 1.5  # the band, in the one image that has it


def test_a_time_budget_too_short_for_large_images_lowers_the_resolution_to_reach_the_target():
    factor, reason, trials = plan_resolution(LARGE, Budget(seconds=600), 0.1, settings_at, pixel_time)
    assert trials[0]["passes"] < TARGET_PASSES <= trials[-1]["passes"] and factor == trials[-1]["resolution"] < 1
    assert all(t["passes"] < TARGET_PASSES for t in trials[:-1]) and "under 10" in reason
    assert trials[-1]["patch_size"] < trials[0]["patch_size"] and trials[0]["step_seconds"] == 1.0


def test_enough_passes_keep_full_resolution_and_a_step_budget_is_not_timed():
    def untimed(settings):
        raise AssertionError("a step budget needs no step time")

    small = dict(LARGE, cases=20, pixels=20 * 512 * 640)
    factor, reason, trials = plan_resolution(small, Budget(steps=1000), 0.1, settings_at, untimed)
    assert factor == 1.0 and len(trials) == 1 and trials[0]["passes"] >= TARGET_PASSES and "at least" in reason


def test_the_finest_class_and_the_image_size_bound_the_resolution():
    membranes = dict(LARGE, boundary_distance=1.5)  # thin membranes: nothing below full resolution
    assert plan_resolution(membranes, Budget(seconds=60), 0.1, settings_at, pixel_time)[0] == 1.0
    nuclei = dict(LARGE, boundary_distance=4.5)  # 3 px at 0.71 at the least
    factor, reason, trials = plan_resolution(nuclei, Budget(seconds=60), 0.1, settings_at, pixel_time)
    assert [t["resolution"] for t in trials] == [1.0, 0.71] and factor == 0.71 and "finest class" in reason
    thumbnails = dict(LARGE, median_size=[100, 120])  # the shorter side stays at least 64 px: 0.71 only
    assert [t["resolution"] for t in plan_resolution(thumbnails, Budget(seconds=1), 0.1, settings_at,
                                                     pixel_time)[2]] == [1.0, 0.71]


def test_a_step_budget_with_patches_as_large_as_the_images_keeps_full_resolution():
    whole = dict(LARGE, median_size=[200, 200], pixels=600 * 200 * 200)  # patches cover the images at any factor
    factor, _, trials = plan_resolution(whole, Budget(steps=10), 0.1, settings_at, pixel_time)
    assert len(trials) > 1 and factor == 1.0


def test_volumes_and_the_instance_mode_keep_full_resolution_and_the_config_wins():
    fingerprint = dict(object_diameter_p90=100.0, boundary_distance=20.0)
    large = stored([(1, 512, 640)] * 600)
    cfg = train_section(budget_steps=10, epochs=None, budget_minutes=None, iterations_per_epoch=5,
                        warmup_iterations=0, val_share=0.1)
    assert make_plan(cfg, large, fingerprint, 2, torch.device("cpu"))["settings"]["resolution"]["value"] < 1
    kept = make_plan(cfg, large, fingerprint, 2, torch.device("cpu"), instances=True)["settings"]["resolution"]
    assert kept["value"] == 1.0 and "instance mode" in kept["reason"]
    fixed = make_plan(dict(cfg, resolution=0.5), large, fingerprint, 2, torch.device("cpu"))
    assert fixed["settings"]["resolution"] == dict(value=0.5, source="config", reason="set in the config")
    assert [trial["resolution"] for trial in fixed["resolutions_tried"]] == [0.5]  # tried as the planner's own
    volumes = stored([(40, 64, 64)] * 2, "volume", [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"train.resolution is 0.5.*3D: volumes keep their target spacing"):
        make_plan(dict(cfg, resolution=0.5), volumes, dict(object_diameter_p90=5.0), 2, torch.device("cpu"))


def test_a_training_step_is_timed_on_the_device():
    cfg = train_section(dims=2, patch_size=[64, 64], depth=3, pool_kernels=None, base_width=8, batch_size=2,
                        loss="ce_dice", augment={}, precision="fp32", device="cpu")
    seconds = step_seconds(cfg, dict(device=CPU, in_channels=1, num_classes=2))
    assert 0 < seconds < 60


def write_large_frames(folder, count: int = 8, side: int = 512) -> dict:
    """`count` grey PNGs of side x side with a bright ellipse about 100 px wide (below preprocess.scale's limit)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        mask = np.zeros((side, side), np.uint8)
        centre = tuple(int(c) for c in rng.integers(80, side - 80, 2))
        cv2.ellipse(mask, centre, (int(rng.integers(45, 60)), int(rng.integers(35, 50))), 30, 0, 360, 255, -1)
        image = (70 + 90 * (mask > 0) + rng.normal(0, 15, mask.shape)).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / "images" / f"f{index}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"f{index}.png"), mask)
    return dict(images=str(folder / "images"), masks=str(folder / "masks"))


def test_large_frames_on_a_short_budget_train_at_a_lower_resolution_and_predict_at_their_own_size(tmp_path):
    config = tiny_config()
    config["data"] = write_large_frames(tmp_path / "data")
    config["train"] = dict(budget_steps=24, iterations_per_epoch=8, base_width=8)  # 4 passes at 512, 16 at 256
    snakemake(tmp_path, "--until", "evaluate", configfile=write_config(tmp_path, config))
    results = tmp_path / "results" / "unet"
    plan = json.loads((results / "plan.json").read_text())
    assert plan["settings"]["resolution"]["value"] == 0.5 and "under 10" in plan["settings"]["resolution"]["reason"]
    assert [t["resolution"] for t in plan["resolutions_tried"]] == [1.0, 0.71, 0.5]
    assert torch.load(results / "package" / "unet.pt", weights_only=True)["models"][0]["resolution"] == 0.5
    per_case = pd.read_parquet(results / "evaluate" / "per_case.parquet").set_index("class")
    for case_id in per_case["id"].unique():
        predicted = cv2.imread(str(results / "predict" / "masks" / f"{case_id}.png"), cv2.IMREAD_UNCHANGED)
        assert predicted.shape == (512, 512) and set(np.unique(predicted)) <= {0, 255}


def test_a_model_trained_at_a_lower_resolution_predicts_in_place_on_the_full_grid(monkeypatch):
    import unetflow.infer.predictor as predictor

    def thresholding(model, image, patch, cfg, device, sigmoid):  # a stand-in model: foreground where it is bright
        return torch.stack([torch.sigmoid(-8 * image[0].float()), torch.sigmoid(8 * image[0].float())])

    monkeypatch.setattr(predictor, "model_probabilities", thresholding)
    mask = np.zeros((1, 1, 300, 400), np.float32)
    cv2.ellipse(mask[0, 0], (230, 140), (90, 60), 20, 0, 360, 1, -1)
    network = (2 * mask - 1).astype(np.float16)
    full = predictor.mean_probabilities([None], [[64, 64]], network, {}, "cpu")
    halved = predictor.mean_probabilities([None], [[64, 64]], network, {}, "cpu", resolutions=[0.5])
    assert halved.shape == full.shape == (2, 1, 300, 400)
    a, b = full.argmax(0).numpy() == 1, halved.argmax(0).numpy() == 1
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99 and torch.allclose(halved.sum(0), torch.ones(1))


def test_validation_at_a_lower_resolution_scores_against_the_stored_labels(tmp_path):
    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, 8:24, 8:24] = 1  # a block that survives halving ...
    labels[0, :, 41] = 1  # ... and a 1 px line that does not
    table = pd.DataFrame({"id": ["v"], "array_path": [str(save_source(tmp_path, "v", labels[None], labels))]})
    (image, stored_labels), = validation_cases(table, ["v"], dims=2, resolution=0.5)
    assert image.shape == (1, 32, 32) and np.array_equal(stored_labels, labels[0])
    model = torch.nn.Conv2d(1, 2, 1)  # foreground where the (halved) image is over 0.6: the line, at 0.5, is lost
    model.weight.data[:] = torch.tensor([-10.0, 10.0]).view(2, 1, 1, 1)
    model.bias.data[:] = torch.tensor([6.0, -6.0])
    _, dice = validation_scores(model.eval(), [(image, stored_labels)], [32, 32], "cpu", "ce_dice")
    block, line = 16 * 16, 64
    assert dice == pytest.approx(2 * block / (2 * block + line), abs=0.03)  # 0.89, not the 1.0 of halved labels


def test_a_resolution_set_in_the_config_that_the_budget_cannot_train_is_warned_about():
    trial = resolution_trial(LARGE, 1.0, Budget(seconds=120), 0.1, settings_at, pixel_time)
    assert trial["passes"] < TARGET_PASSES
    assert few_passes(trial, "train.resolution") == (
        f"train.resolution 1: the network sees the training pixels {trial['passes']:g} times in the budget (patch "
        f"{trial['patch_size']}, batch {trial['batch_size']}, a step measured at 1 s), under the 10 the planner aims "
        f"for, so it may stop undertrained; leave train.resolution to the planner (null) or raise the budget "
        f"(train.budget_minutes)")
    assert few_passes(resolution_trial(LARGE, 0.25, Budget(seconds=6000), 0.1, settings_at, pixel_time),
                      "train.resolution") is None
    assert few_passes(resolution_trial(LARGE, 1.0, Budget(steps=10), 0.1, settings_at, pixel_time),
                      "train.resolution").endswith("raise the budget (train.epochs or train.budget_steps)")


def test_a_resolution_set_below_what_the_finest_class_allows_is_warned_about():
    assert thin_structure_loss(0.5, 1.41, "train.resolution") == (
        "train.resolution 0.5 shrinks the finest class's median distance to another class from 1.41 px to 0.7 px, "
        "under the 3 px the planner keeps: thin structures (vessels, membranes) are lost in training and prediction; "
        "leave train.resolution to the planner (null) or set it to at least 1")
    assert thin_structure_loss(0.5, 12.0, "preprocess.scale") is None  # 6 px: still over the floor
    lost = thin_structure_loss(0.2, 12.0, "preprocess.scale", "auto")
    assert lost.endswith("leave preprocess.scale to the planner (auto) or set it to at least 0.25")
    assert thin_structure_loss(1.0, 1.41, "train.resolution") is None  # nothing shrinks
    assert thin_structure_loss(0.5, None, "train.resolution") is None  # volumes: no boundary distance


def test_a_planned_resolution_still_under_the_target_passes_is_warned_about():
    thin = dict(LARGE, boundary_distance=1.5)  # thin layers: no lower resolution allowed
    factor, _, trials = plan_resolution(thin, Budget(seconds=120), 0.1, settings_at, pixel_time)
    assert factor == 1.0 and len(trials) == 1
    assert undertrained_note(trials, factor).startswith(
        f"the budget lets the network see the training pixels {trials[0]['passes']:g} times (resolution 1, patch ")
    assert undertrained_note(trials, factor).endswith("the model may stop undertrained; raise train.budget_minutes")
    enough = plan_resolution(LARGE, Budget(seconds=600), 0.1, settings_at, pixel_time)
    assert undertrained_note(enough[2], enough[0]) is None and undertrained_note([], 1.0) is None
