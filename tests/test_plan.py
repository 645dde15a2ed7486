"""The plan: one per experiment, made from all training sources and the device's fixed memory target, read by every
fold; 3 folds of images of mixed sizes train on it and predict with their ensemble."""

import json
import types

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import snakemake, write_config
from unetflow.plan.plan import (
    CPU_BATCH_2D,
    CPU_BATCH_3D,
    make_plan,
    plan_batch_size,
    plan_dice_background,
    plan_patch_size,
    planned_settings,
    training_bytes_per_sample,
    training_traits,
    unseen_class_problem,
    unseen_classes,
)

CPU = dict(type="cpu", name="cpu", memory_bytes=None)
GPU_80 = dict(type="cuda", name="faked", memory_bytes=80 * 2**30)
UNSET = dict(dims="auto", patch_size=None, depth=None, base_width=None, batch_size=None,
             foreground_oversampling=None, dice_background="auto")
ISBI_LIKE = dict(cases=17, median_size=[512, 512], class_shares=[0.22, 0.78], object_diameter_p90=60.0)


def stored(shapes, kind="image", spacing=None, classes=(900, 100)) -> pd.DataFrame:
    """A preprocess table of sources of the given (slices, height, width) shapes, stored as they were read."""
    return pd.DataFrame([dict(id=f"s{i}", kind=kind, slices=z, height=y, width=x, channels=1, spacing=spacing,
                              original_slices=z, original_height=y, original_width=x, class_voxels=list(classes))
                         for i, (z, y, x) in enumerate(shapes)])


def test_patch_plan_follows_median_size_and_depth():
    assert plan_patch_size([100, 120, 500], [64, 64, 64], depth=3) == [120, 64]
    assert plan_patch_size([1000] * 3, [37] * 3, depth=4) == [256, 32]
    assert plan_patch_size([5], [5], depth=3) == [8, 8]


def test_batch_is_a_fixed_cap_on_a_cpu_and_fills_a_third_of_a_gpu():
    assert plan_batch_size([128, 128], 3, 16, CPU) == CPU_BATCH_2D
    assert plan_batch_size([32, 32, 32], 3, 16, CPU) == CPU_BATCH_3D
    one_sample = training_bytes_per_sample([128, 128], 3, 16)
    assert plan_batch_size([128, 128], 3, 16, dict(GPU_80, memory_bytes=3 * 5 * one_sample)) == 5
    assert plan_batch_size([128, 128], 3, 16, GPU_80) == 64


def test_traits_count_2d_cases_per_slice_and_scale_object_sizes_to_the_stored_grid():
    table = stored([(1, 100, 120), (1, 100, 120), (3, 40, 60)])
    traits = training_traits(table, 2, dict(object_diameter_p90=30.0))
    assert traits["cases"] == 5 and traits["sources"] == 3 and traits["median_size"] == [40, 60]
    assert traits["class_shares"] == [0.9, 0.1] and traits["object_diameter_p90"] == 30.0
    halved = table.assign(original_height=table["height"] * 2)  # scaled by 0.5 in preprocessing
    assert training_traits(halved, 2, dict(object_diameter_p90=30.0))["object_diameter_p90"] == 15.0
    volumes = stored([(20, 64, 64), (30, 64, 64)], "volume", [3.0, 1.0, 1.0])
    assert training_traits(volumes, 3, dict(object_diameter_p90=0.0))["spacing"] == [3.0, 1.0, 1.0]


def test_plan_on_a_cpu_and_on_a_gpu():
    planned, reasons = planned_settings(dict(UNSET), ISBI_LIKE, 2, "2D images", CPU)
    assert planned["patch_size"] == [256, 256] and planned["depth"] == 5  # coarsest map 8 px
    assert planned["base_width"] == 16 and planned["batch_size"] == CPU_BATCH_2D
    assert planned["foreground_oversampling"] == 0.33
    assert set(reasons) == set(UNSET) | {"pool_kernels"} and planned["dims"] == 2
    planned, _ = planned_settings(dict(UNSET), ISBI_LIKE, 2, "2D images", GPU_80)
    assert planned["patch_size"] == [512, 512] and planned["depth"] == 6 and planned["base_width"] == 32


def test_the_dice_covers_class_zero_unless_it_is_the_largest_class():
    isbi, why = plan_dice_background("auto", [0.22, 0.78])  # membranes stored as 0
    assert isbi and "22.0%" in why and "78.0%" in why
    assert plan_dice_background("auto", [0.78, 0.22])[0] is False  # the same data with the values swapped
    assert plan_dice_background("auto", [0.9, 0.06, 0.04])[0] is False  # a dominant background (nnU-Net's case)
    assert plan_dice_background("auto", [0.3, 0.5, 0.2])[0] is True  # class 0 is not the background there
    assert plan_dice_background(False, [0.22, 0.78]) == (False, None)  # set in the config: no reason
    assert plan_dice_background(True, [0.9, 0.1]) == (True, None)
    planned, reasons = planned_settings(dict(UNSET), dict(ISBI_LIKE, class_shares=[0.95, 0.05]), 2, "2D", CPU)
    assert planned["dice_background"] is False and "a background" in reasons["dice_background"]


def test_explicit_settings_win_and_rare_classes_raise_oversampling():
    explicit = dict(dims=2, patch_size=[96, 64], depth=2, base_width=8, batch_size=3, foreground_oversampling=0.1,
                    dice_background=False)
    planned, reasons = planned_settings(explicit, ISBI_LIKE, 2, None, CPU)
    assert planned == dict(explicit, pool_kernels=None) and list(reasons) == ["pool_kernels"]  # 2x2: nothing to set
    rare = dict(ISBI_LIKE, class_shares=[0.97, 0.01, 0.02])
    planned, reasons = planned_settings(dict(UNSET, patch_size=[40, 96]), rare, 2, "2D", CPU)
    assert planned["depth"] == 2 and planned["foreground_oversampling"] == 0.5  # 40 -> 20 -> 10 px; 5 would be < 8
    assert "patch_size" not in reasons and "1.0%" in reasons["foreground_oversampling"]


def train_section(**settings) -> dict:
    return dict(UNSET, resolution=None, norm="batch", deep_supervision=False, **settings)


def test_a_gpu_plan_is_made_for_the_gpu_s_total_memory_not_the_memory_free_now(monkeypatch):
    properties = types.SimpleNamespace(name="faked GPU", total_memory=24 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: properties)
    table = stored([(1, 512, 512)] * 4)
    plans = []
    for free in (20 * 2**30, 2**30):  # an idle GPU, then one that other jobs fill
        monkeypatch.setattr("unetflow.gpu.free_memory_bytes", lambda device, free=free: free)
        plans.append(make_plan(train_section(), table, dict(object_diameter_p90=20.0), 2, torch.device("cuda")))
    assert plans[0] == plans[1]
    assert plans[0]["device"] == dict(type="cuda", name="faked GPU", memory_bytes=24 * 2**30)
    assert plans[0]["settings"]["batch_size"]["value"] > CPU_BATCH_2D and plans[0]["parameters"] > 0


def test_three_dims_are_refused_for_2d_data_naming_the_key():
    with pytest.raises(ValueError, match="train.dims is 3"):
        make_plan(train_section(dims=3), stored([(1, 64, 64)] * 2), dict(object_diameter_p90=5.0), 2,
                  torch.device("cpu"))


def write_mixed_sizes(folder, count: int = 12) -> dict:
    """`count` grey PNGs of mixed sizes with 0/255 masks of a bright square: the data section naming them."""
    import cv2

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        height, width = int(rng.integers(36, 90)), int(rng.integers(36, 90))
        mask = np.zeros((height, width), np.uint8)
        top, left = int(rng.integers(0, height - 16)), int(rng.integers(0, width - 16))
        mask[top:top + 14, left:left + 14] = 255
        image = np.clip(mask * 0.6 + rng.normal(60, 20, mask.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / "images" / f"c{index:02d}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"c{index:02d}.png"), mask)
    return dict(images=str(folder / "images"), masks=str(folder / "masks"))


def test_three_folds_of_mixed_sizes_train_on_one_plan_and_predict_as_an_ensemble(tmp_path):
    config = dict(data=write_mixed_sizes(tmp_path / "data"), split=dict(folds=3, test=0.25),
                  train=dict(budget_steps=2, iterations_per_epoch=1, val_share=1.0))
    snakemake(tmp_path, "--until", "evaluate", configfile=write_config(tmp_path, config))
    results = tmp_path / "results" / "unet"
    plan = json.loads((results / "plan.json").read_text())
    assert {entry["source"] for entry in plan["settings"].values()} == {"planned"}  # nothing was set
    assert plan["traits"]["sources"] == 9 and not list(results.glob("train/fold*/plan.json"))
    package = torch.load(results / "package" / "unet.pt", weights_only=True)
    assert [m["source"] for m in package["models"]] == ["unet/fold0", "unet/fold1", "unet/fold2"]
    assert all(m["patch_size"] == plan["settings"]["patch_size"]["value"] for m in package["models"])
    assert package["plan"] == plan
    per_case = pd.read_parquet(results / "evaluate" / "per_case.parquet")
    splits = pd.read_parquet(tmp_path / "results" / "split" / "splits.parquet")
    assert sorted(per_case["id"].unique()) == sorted(splits.loc[splits["split"] == "test", "id"])


def test_a_class_without_a_training_pixel_is_named_however_rare_the_others():
    sources = pd.DataFrame({"class_voxels": [[90000, 5, 0, 1], [70000, 0, 0, 0]]})  # 'rare' 1 px in 160006
    assert unseen_classes(["background", "cell", "absent", "rare"], sources) == ["absent"]


def test_a_class_without_a_training_pixel_in_a_fold_is_refused_naming_the_cases_that_have_it():
    names = ["background", "cell", "slip"]
    stored = pd.DataFrame({"id": ["a", "b", "c", "d"],
                           "class_voxels": [[900, 50, 0], [700, 0, 30], [800, 10, 0], [500, 20, 1600]]})
    splits = pd.DataFrame({"id": ["a", "b", "c", "d"], "split": ["train", "val", "train", "test"]})
    assert unseen_class_problem(names, stored, splits).startswith(
        "class(es) ['slip'] have no pixel in the training cases, only in b (val), d (test): ")
    assert unseen_class_problem(names, stored, splits.assign(split=["train", "train", "val", "test"])) is None
    folds = splits.assign(split=["val", "train", "train", "test"], fold=[0, 1, 1, -1])  # fold 1 trains on a only
    assert unseen_class_problem(names, stored, folds).startswith(
        "class(es) ['slip'] have no pixel in the training cases of fold 1, only in b (val), d (test): ")
