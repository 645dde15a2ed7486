"""Instance mode: object metrics on hand-computed cases and against StarDist, instance targets and checks, the
touching-cells demo, watershed postprocessing, and one tiny end-to-end run."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import applied, bench_module, build_manifest, job_counts, snakemake, tiny_config, write_config
from unetflow.data.data_warnings import data_warnings
from unetflow.data.demo_cells import render_touching_cells
from unetflow.data.pairing import DataValidationError
from unetflow.data.preprocess import preprocess_sources
from unetflow.evaluate.object_metrics import MAP_THRESHOLDS, object_metrics
from unetflow.infer.object_probability import OBJECT_PROBABILITIES
from unetflow.infer.package import load_package
from unetflow.instances.objects import instances_from_foreground, instances_from_three_class, object_rows
from unetflow.instances.targets import split_parts, stray_parts, three_class_target, touching_pairs, without_specks
from unetflow.instances.weight_map import SIGMA, W0, border_weight_map
from unetflow.io.formats import ImageReadError
from unetflow.io.images import read_mask, write_mask
from unetflow.io.store import has_array, load_array


def squares(*boxes, shape=(10, 12)) -> np.ndarray:
    """An id map with object i+1 filling boxes[i] = (top, bottom, left, right) (bottom/right exclusive)."""
    ids = np.zeros(shape, np.uint16)
    for index, (top, bottom, left, right) in enumerate(boxes, start=1):
        ids[top:bottom, left:right] = index
    return ids


BENCH = Path(__file__).resolve().parents[1] / "bench"
TWO_TOUCHING = squares((2, 6, 1, 5), (2, 6, 5, 9))  # two 4x4 squares sharing an edge


def test_map_thresholds_are_stardists():
    assert MAP_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def test_merged_touching_squares():
    merged = squares((2, 6, 1, 9))  # one 4x8 object over both: IoU 16/32 = 0.5 with each square
    m = object_metrics(TWO_TOUCHING, merged)
    assert (m["object_tp"], m["object_fp"], m["object_fn"]) == (1, 0, 1)  # IoU 0.5 >= 0.5 matches one square
    assert m["object_precision"] == 1 and m["object_recall"] == 0.5 and m["object_f1"] == pytest.approx(2 / 3)
    assert m["object_map"] == pytest.approx(0.5 / 9)  # TP/(TP+FP+FN) = 1/2 at 0.5, 0 at every other threshold
    assert m["aji"] == pytest.approx(32 / 64)  # both squares pick the merged object: C = 16 + 16, U = 32 + 32
    assert m["pq"] == pytest.approx(0.5 / 1.5)


def test_split_object():
    whole = squares((2, 6, 1, 9))
    m = object_metrics(whole, TWO_TOUCHING)
    assert (m["object_tp"], m["object_fp"], m["object_fn"]) == (1, 1, 0)
    assert m["object_precision"] == 0.5 and m["object_recall"] == 1
    assert m["aji"] == pytest.approx(16 / 48)  # C = 16, U = 32 + the unused half 16
    assert m["pq"] == pytest.approx(1 / 3)


def test_shifted_squares():
    gt = squares((0, 5, 0, 5), (0, 5, 5, 10), shape=(6, 12))
    pred = squares((0, 5, 1, 6), (0, 5, 6, 11), shape=(6, 12))  # IoU 20/30 each
    m = object_metrics(gt, pred)
    assert m["object_f1"] == 1 and m["matched_iou"] == pytest.approx(2 / 3)
    assert m["object_map"] == pytest.approx(4 / 9)  # matched at 0.5, 0.55, 0.6, 0.65 only
    assert m["aji"] == pytest.approx(40 / 60) and m["pq"] == pytest.approx(2 / 3)


def test_ids_are_matched_not_compared():
    relabelled = np.where(TWO_TOUCHING == 1, 7, np.where(TWO_TOUCHING == 2, 3, 0))
    m = object_metrics(TWO_TOUCHING, relabelled)
    assert m["object_f1"] == m["object_map"] == m["aji"] == m["pq"] == 1


def test_empty_cases():
    empty = np.zeros_like(TWO_TOUCHING)
    both = object_metrics(empty, empty)
    assert both["object_f1"] == both["object_map"] == both["aji"] == both["pq"] == 1
    for gt, pred in ((empty, TWO_TOUCHING), (TWO_TOUCHING, empty)):
        m = object_metrics(gt, pred)
        assert m["object_f1"] == m["object_map"] == m["aji"] == m["pq"] == 0


def test_metrics_agree_with_stardist():
    matching = pytest.importorskip("stardist.matching")
    rng = np.random.default_rng(3)
    for _ in range(5):
        _, gt = render_touching_cells(rng, 64)
        _, other = render_touching_cells(rng, 64)
        pred = np.where(rng.random() < 0.5, np.roll(gt, (1, 2), (0, 1)), other).astype(np.int32)
        ours = object_metrics(gt.astype(np.int32), pred)
        theirs = matching.matching_dataset([gt.astype(np.int32)], [pred], thresh=list(MAP_THRESHOLDS),
                                           show_progress=False)
        at_half = theirs[0]
        assert (ours["object_tp"], ours["object_fp"], ours["object_fn"]) == (at_half.tp, at_half.fp, at_half.fn)
        assert ours["object_f1"] == pytest.approx(at_half.f1)
        assert ours["pq"] == pytest.approx(at_half.panoptic_quality)
        assert ours["object_map"] == pytest.approx(np.mean([s.accuracy for s in theirs]))


def test_instance_errors_sorts_the_misses_and_false_objects_by_kind():
    """bench/instance_errors.py: a found object, one left background, two merged into one (each IoU 16/36), one
    split in two (each half IoU 12/32), one outlined 2 px off (IoU 16/48), a false object in the background."""
    module = bench_module("instance_errors")
    truth = squares((0, 4, 0, 4), (0, 4, 6, 10), (6, 10, 0, 4), (6, 10, 4, 8), (12, 16, 0, 8), (12, 16, 12, 20),
                    shape=(20, 20))
    predicted = squares((0, 4, 0, 4), (6, 10, 0, 9), (12, 16, 0, 3), (17, 20, 0, 3), (12, 16, 5, 8), (14, 18, 12, 20),
                        shape=(20, 20))
    counts = module.slice_errors(truth.astype(np.int64), predicted.astype(np.int64), small=20)
    assert counts == {"tp": 1, "fn_background": 1, "fn_merged": 2, "fn_split": 1, "fn_outline": 1,
                      "fp_background": 1, "fp_merged": 1, "fp_split": 2, "fp_outline": 1,
                      "small_true": 4, "small_tp": 1, "fn_small": 3}
    lines = module.report(counts, 20).splitlines()
    assert lines[0] == "AP@0.5 0.0909: TP 1, FP 5, FN 5" and lines[-1].endswith(": 0.0000")


def test_star_convex_fit_redraws_convex_objects_and_not_a_ring():
    """bench/star_convex_fit.py: a disc and two touching squares come back from 32 rays nearly whole (AP 1), a ring
    (not star-convex from any of its pixels) does not."""
    module = bench_module("star_convex_fit")
    rows, cols = np.mgrid[:40, :40]
    radius = np.hypot(rows - 20, cols - 20)
    ids = squares((2, 10, 2, 10), (2, 10, 10, 18), shape=(40, 40)).astype(np.int64)
    ids[radius < 8] = 3
    drawn, fits = module.star_convex_ids(ids, 32)
    assert min(fits) > 0.9 and set(np.unique(drawn)) == {0, 1, 2, 3}
    assert module.report({"tp": 3, "fp": 0, "fn": 0}, fits, 32).splitlines()[1].startswith("AP@0.5 of the polygons "
                                                                                             "as a prediction 1.0000")
    ring = ((radius >= 12) & (radius < 16)).astype(np.int64)
    assert module.star_convex_ids(ring, 32)[1][0] < 0.5


def test_three_class_target_separates_touching_objects():
    ids = squares((2, 10, 1, 9), (2, 10, 9, 17), shape=(12, 18))  # two 8x8 squares sharing an edge
    target = three_class_target(ids)
    assert set(np.unique(target)) == {0, 1, 2}
    assert (target[ids == 0] == 0).all()
    assert (target[2:10, 7:11] == 2).all() and (target[4:8, 3:7] == 1).all()  # 2 px of boundary on each side
    interiors = instances_from_foreground(np.stack([target != 1, target == 1]).astype(np.float32), 1)
    assert interiors.max() == 2


def test_small_objects_without_an_interior_are_still_found():
    ids = squares((1, 4, 1, 4), (6, 9, 6, 9), shape=(12, 12))  # 3x3 nuclei: all boundary in the three-class target
    target = three_class_target(ids)
    assert not (target == 1).any()
    found = instances_from_three_class(np.stack([target == k for k in range(3)]).astype(np.float32), min_size=1)
    np.testing.assert_array_equal(found, ids)


def test_split_and_touching_ids():
    ids = squares((0, 2, 0, 2), (0, 2, 2, 4), (5, 7, 5, 7), shape=(10, 10))
    assert touching_pairs(ids) == 1 and split_parts(ids) == {}
    ids[8:10, 0:2] = 3  # id 3 reused for a second blob
    assert split_parts(ids) == {3: [4, 4]} and stray_parts(ids) == ({}, {3: [4, 4]})  # as large: two objects


def test_watershed_recovers_touching_objects_from_their_target():
    _, ids = render_touching_cells(np.random.default_rng(0), 96)
    target = three_class_target(ids)
    probs = np.stack([target == k for k in range(3)]).astype(np.float32)
    found = instances_from_three_class(probs, min_size=1)
    assert object_metrics(ids, found)["object_f1"] > 0.95
    baseline = instances_from_foreground(probs, min_size=1)  # connected components merge touching cells
    assert object_metrics(ids, baseline)["object_f1"] < 0.6


def test_small_objects_removed_and_table():
    probs = np.stack([TWO_TOUCHING == 0, TWO_TOUCHING > 0, np.zeros(TWO_TOUCHING.shape, bool)]).astype(np.float32)
    probs[:, 8, 10] = (0, 1, 0)  # a one-pixel object
    assert instances_from_three_class(probs, min_size=1).max() == 2
    ids = instances_from_three_class(probs, min_size=4)
    rows = object_rows("c", ids, probs)
    assert [r["area"] for r in rows] == [32] and rows[0]["bbox_top"] == 2 and rows[0]["bbox_bottom"] == 6
    assert rows[0]["mean_probability"] == 1


def test_a_few_stray_specks_of_an_id_are_dropped_but_a_second_object_under_one_id_is_not():
    _, ids = render_touching_cells(np.random.default_rng(1), 128)
    slipped = ids.copy()
    slipped[0:2, 0:3] = 7  # 6 stray pixels of cell 7 in a corner: an annotation slip
    specks, split = stray_parts(slipped)
    assert list(specks) == [7] and specks[7][1:] == [6] and split == {}
    cleaned = without_specks(slipped)
    assert (cleaned[0:2, 0:3] == 0).all() and np.array_equal(cleaned[2:], slipped[2:])  # cell 7 itself kept whole
    assert (cleaned == 7).sum() == (ids == 7).sum()
    doubled = ids.copy()
    doubled[ids == 9] = 8  # cell 9 relabelled 8: two whole cells under one id
    assert stray_parts(doubled)[1].keys() == {8} and without_specks(doubled) is doubled


def test_demo_cells_touch_and_are_connected():
    image, ids = render_touching_cells(np.random.default_rng(1), 128)
    assert image.dtype == np.uint8 and ids.dtype == np.uint16
    assert split_parts(ids) == {} and touching_pairs(ids) >= 10


def write_instance_pairs(folder, ids_list, suffix=".png"):
    """Images and instance masks (16-bit) named c<i> in folder/images and folder/masks."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for index, ids in enumerate(ids_list):
        write_mask(folder / "images" / f"c{index}.png", (ids > 0).astype(np.uint8) * 200)
        write_mask(folder / "masks" / f"c{index}{suffix}", ids)
    return folder / "images", folder / "masks"


def test_ingest_reads_and_counts_instances(tmp_path):
    many = np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) % 300 + 1  # ids above 255 need 16 bits
    many[:, :3] = 0
    images, masks = write_instance_pairs(tmp_path, [np.pad(TWO_TOUCHING, 15), many], suffix=".tif")
    assert read_mask(masks / "c1.tif").max() == 300
    with pytest.raises(DataValidationError, match="not one connected object"):
        build_manifest(images, masks, instances=True)  # ids of `many` recur in separate blobs
    (masks / "c1.tif").unlink()
    (images / "c1.png").unlink()
    manifest, classes = build_manifest(images, masks, instances=True)
    assert classes["name"].tolist() == ["background", "foreground"]  # the default target, weight_map
    assert manifest.loc[0, "objects"] == 2 and manifest.loc[0, "touching_pairs"] == 1
    _, classes = build_manifest(images, masks, instances=True, instance_target="three_class")
    assert classes["name"].tolist() == ["background", "interior", "boundary"]


def test_a_data_set_with_a_slipped_id_trains_without_the_specks_and_says_so(tmp_path):
    _, ids = render_touching_cells(np.random.default_rng(0), 64)
    slipped = ids.copy()
    slipped[0:2, 0:2] = 3  # 4 stray pixels of cell 3 (as in one mask of the DSB 2018 nuclei)
    images, masks = write_instance_pairs(tmp_path, [slipped, ids])
    manifest, classes = build_manifest(images, masks, instances=True)
    assert manifest["speck_ids"].map(list).tolist() == [[3], []] and manifest["speck_pixels"].tolist() == [4, 0]
    warnings = data_warnings(manifest, classes)
    assert warnings["kind"].tolist() == ["instance_specks"] and warnings["file"].iloc[0].endswith("c0.png")
    stored = preprocess_sources(manifest, classes, str(tmp_path / "arrays"), applied("zscore"))
    kept = load_array(stored["array_path"].iloc[0], "instances")[0]
    np.testing.assert_array_equal(kept, np.where((slipped == 3) & (ids != 3), 0, slipped))


def test_ingest_refuses_declared_classes_with_instances(tmp_path):
    images, masks = write_instance_pairs(tmp_path, [np.pad(TWO_TOUCHING, 15)])
    with pytest.raises(DataValidationError, match="fixes the classes"):
        build_manifest(images, masks, classes={"bg": 0, "a": 1, "b": 2}, instances=True)


def test_preprocess_stores_the_weights_of_the_configured_w0_and_sigma(tmp_path):
    _, ids = render_touching_cells(np.random.default_rng(0), 64)
    images, masks = write_instance_pairs(tmp_path, [ids])
    manifest, classes = build_manifest(images, masks, instances=True)
    for name, weight_map in [("paper", None), ("custom", {"w0": 25.0, "sigma": 2.0})]:
        settings = applied("zscore", weight_map=weight_map)
        assert settings["weight_map"] == weight_map  # the settings as applied (settings.json) record them
        table = preprocess_sources(manifest, classes, str(tmp_path / name), settings)
        expected = border_weight_map(ids, **(weight_map or {"w0": W0, "sigma": SIGMA}))[1]
        np.testing.assert_array_equal(load_array(table["array_path"].iloc[0], "weights")[0], expected)
    assert not np.array_equal(border_weight_map(ids)[1], border_weight_map(ids, 25.0, 2.0)[1])


@pytest.mark.parametrize("target, folds", [("three_class", 2), ("weight_map", 1)])
def test_instance_mode_end_to_end(tmp_path, target, folds):
    config = tiny_config()  # the demo data are instance masks in the instance mode
    config["data"] = {"instances": True, "instance_target": target}
    config["split"] = {"test": 0.25, "folds": folds} if folds > 1 else config["split"]
    snakemake(tmp_path, configfile=write_config(tmp_path, config))
    classes = pd.read_parquet(tmp_path / "results" / "data" / "classes.parquet")
    assert classes["instance_target"].eq(target).all() and len(classes) == (3 if target == "three_class" else 2)
    stored = next((tmp_path / "results" / "preprocess" / "arrays").iterdir())
    assert has_array(stored, "weights") == (target == "weight_map") and has_array(stored, "instances")
    weights = load_array(stored, "weights") if target == "weight_map" else None
    assert target == "three_class" or (weights.dtype == np.float16 and weights.min() >= 1)
    results = tmp_path / "results" / "unet"
    per_case = pd.read_parquet(results / "evaluate" / "per_case.parquet")
    objects_rows = per_case[per_case["class"] == 1]
    assert objects_rows["class_name"].eq("objects").all() and objects_rows["object_f1"].between(0, 1).all()
    assert "aji_mean" in pd.read_parquet(results / "evaluate" / "summary.parquet")
    masks = sorted((results / "predict" / "masks").glob("*.png"))
    assert masks and all(read_mask(path).dtype in (np.uint8, np.uint16) for path in masks)
    table = pd.read_parquet(results / "predict" / "masks" / "objects.parquet")
    assert list(table.columns)[:4] == ["case", "slice", "id", "area"]
    fingerprint = json.loads((tmp_path / "results" / "data" / "fingerprint.json").read_text())
    packaged = load_package(results / "package" / "unet.pt").predict  # auto: from the data, and the validation images
    assert packaged["min_object_size"] == fingerprint["min_object_size"] > 1
    assert (table["area"] >= packaged["min_object_size"]).all()
    assert packaged["object_probability"] in OBJECT_PROBABILITIES
    log = (tmp_path / "results" / "logs" / "unet" / "package.log").read_text()
    assert "predict.object_probability auto" in log and ("each predicted by its fold's models" in log) == (folds > 1)
    for path in masks:  # every object written is in the table, and no other
        ids = set(np.unique(read_mask(path))) - {0}
        assert ids == set(table.loc[table["case"] == path.stem, "id"])
    with Image.open(results / "report" / "overlays.png") as overlays:  # three cases side by side, two rows
        assert overlays.format == "PNG" and overlays.size[0] > overlays.size[1] > 200
    changed = {**config, "preprocess": {"weight_map": {"w0": 20}}}  # reruns preprocess and after, in this mode only
    jobs = set(job_counts(tmp_path, changed, name="w0.yaml"))
    assert jobs == ({"preprocess", "plan", "train", "package", "predict", "evaluate", "report", "leaderboard"}
                    if target == "weight_map" else set())
    infer_matches_predict(tmp_path, config, masks, table)
    if target == "weight_map":
        seeds_benchmark_scores_both_seedings(tmp_path)
        errors_benchmark_counts_as_the_evaluation(tmp_path, objects_rows)
        star_fit_benchmark_redraws_every_test_object(tmp_path, objects_rows)
        star_probe_scores_the_test_objects(tmp_path, objects_rows)


def seeds_benchmark_scores_both_seedings(workdir):
    """bench/instance_seeds.py (bench/instances.md) scores the run's model with both seedings on val and test, and
    with other smallest objects."""
    script = Path(__file__).resolve().parents[1] / "bench" / "instance_seeds.py"
    run = subprocess.run([sys.executable, str(script), "results", "--sizes", "0"], cwd=workdir, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stderr
    rows = [line.split()[:2] for line in run.stdout.splitlines()[1:]]
    assert rows == [[split, seeds] for split in ("val", "test") for seeds in ("distance", "h-maxima", "h-maxima,")]


def errors_benchmark_counts_as_the_evaluation(workdir, objects_rows):
    """bench/instance_errors.py (bench/instances.md) counts the test images' TP, FP and FN as the evaluation does."""
    run = subprocess.run([sys.executable, str(BENCH / "instance_errors.py"), "results", "unet"], cwd=workdir,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    tp, fp, fn = (int(objects_rows[f"object_{kind}"].sum()) for kind in ("tp", "fp", "fn"))
    assert run.stdout.startswith(f"AP@0.5 {tp / max(tp + fp + fn, 1):.4f}: TP {tp}, FP {fp}, FN {fn}\n")


def star_fit_benchmark_redraws_every_test_object(workdir, objects_rows):
    """bench/star_convex_fit.py (bench/instances.md) redraws every true object of the test images, which the
    generated round cells let a star-convex polygon fit."""
    run = subprocess.run([sys.executable, str(BENCH / "star_convex_fit.py"), "results"], cwd=workdir,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    true_objects = int(objects_rows["object_tp"].sum() + objects_rows["object_fn"].sum())
    assert run.stdout.startswith(f"{true_objects} objects redrawn from 32 rays")
    tp, fp, fn = (int(value) for value in re.findall(r"TP (\d+), FP (\d+), FN (\d+)", run.stdout)[0])
    assert tp + fn == true_objects and tp / (tp + fp + fn) > 0.9


def star_probe_scores_the_test_objects(workdir, objects_rows):
    """bench/star_convex_train.py (bench/instances.md) trains its probe on the run's split for a few steps and scores
    every true object of the test images."""
    run = subprocess.run([sys.executable, str(BENCH / "star_convex_train.py"), "results", "--steps", "2", "--batch",
                          "2", "--threads", "1"], cwd=workdir, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    tp, fp, fn = (int(value) for value in re.findall(r"test AP@0.5 [\d.]+ \(TP (\d+), FP (\d+), FN (\d+)\)",
                                                     run.stdout)[0])
    assert tp + fn == int(objects_rows["object_tp"].sum() + objects_rows["object_fn"].sum())


def infer_matches_predict(workdir, config, masks, table):
    """`infer` on the test images (copied without masks) writes predict's instance masks and object table, and
    counts the objects and their pixels in its summary."""
    (workdir / "new").mkdir()
    for path in masks:
        shutil.copy(workdir / "results" / "demo" / "images" / path.name, workdir / "new" / path.name)
    config["infer"] = {"images": "new", "models": ["unet"], "shards": 2}
    snakemake(workdir, "infer", configfile=write_config(workdir, config, "infer.yaml"))
    inferred = workdir / "results" / "infer" / "unet"
    for path in masks:
        assert np.array_equal(read_mask(inferred / "masks" / path.name), read_mask(path))
    objects = pd.read_parquet(inferred / "objects.parquet")
    pd.testing.assert_frame_equal(objects.sort_values(["case", "id"]).reset_index(drop=True),
                                  table.sort_values(["case", "id"]).reset_index(drop=True))
    summary = pd.read_parquet(workdir / "results" / "infer" / "unet" / "summary.parquet")
    counts = summary.groupby("id")["objects"].first()
    assert counts.to_dict() == table.groupby("case").size().reindex(counts.index, fill_value=0).to_dict()
    pixels = summary[summary["class"] > 0].groupby("id")["pixels"].sum()  # the pixels of the objects written
    assert pixels.to_dict() == {path.stem: int((read_mask(path) > 0).sum()) for path in masks}


def test_instance_masks_refuse_colour(tmp_path):
    images, masks = write_instance_pairs(tmp_path, [np.pad(TWO_TOUCHING, 15)])
    rgb = np.zeros((40, 42, 3), np.uint8)
    rgb[..., 0] = 5
    write_mask(masks / "c0.png", rgb)
    with pytest.raises((DataValidationError, ImageReadError), match="one id per pixel|colour"):
        build_manifest(images, masks, instances=True)
