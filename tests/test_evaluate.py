"""Evaluation: ground truth read from the mask files, ROI restriction, pixel spacing (x first), units (a volume in
3D, a one-slice volume in 2D), and the summary table."""

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from unetflow.evaluate.evaluate import evaluate_sources, summarize, unpredicted_notes
from unetflow.evaluate.metrics import case_metrics
from unetflow.io.sources import read_source_roi

SIZE = 20
CLASSES = pd.DataFrame({"index": [0, 1], "name": ["background", "cell"], "value": [0, 255]})
CFG = dict(tolerance=1.0, spacing=None)


def write_png(path, array: np.ndarray) -> str:
    cv2.imwrite(str(path), array.astype(np.uint8))
    return str(path)


def sources(*rows: dict) -> pd.DataFrame:
    """Ingest manifest rows of 2D sources: id and mask_path given, the rest as ingest writes them."""
    return pd.DataFrame([{**dict(kind="image", slices=1, slice_axis=0, roi_path=None, image_path=row["mask_path"]),
                          **row} for row in rows])


@pytest.fixture
def case_files(tmp_path):
    """Case 'a': the prediction matches the ground truth inside the left half and adds a 16-pixel false blob in
    the right half; the ROI is the left half."""
    gt = np.zeros((SIZE, SIZE), np.uint8)
    gt[2:8, 2:8] = 255                    # 36 pixels, inside the ROI
    pred = gt.copy()
    pred[12:16, 14:18] = 255              # 16 false-positive pixels, outside the ROI
    roi = np.zeros((SIZE, SIZE), np.uint8)
    roi[:, :SIZE // 2] = 1
    preds = tmp_path / "pred"
    preds.mkdir()
    write_png(preds / "a.png", pred)
    return dict(mask_path=write_png(tmp_path / "a_gt.png", gt), roi_path=write_png(tmp_path / "a_roi.png", roi),
                pred_dir=str(preds))


def cell_row(table: pd.DataFrame) -> pd.Series:
    return table[table["class"] == 1].iloc[0]


def test_roi_restricts_the_counts_to_its_pixels(case_files):
    cases = sources(dict(id="a", mask_path=case_files["mask_path"], roi_path=case_files["roi_path"]))
    cell = cell_row(evaluate_sources(cases, case_files["pred_dir"], CLASSES, CFG))
    assert (cell.tp, cell.fp, cell.fn) == (36, 0, 0)
    assert cell.tp + cell.fp + cell.fn + cell.tn == SIZE * SIZE // 2
    assert cell.dice == 1.0 and bool(cell.roi)


@pytest.mark.parametrize("roi_path", ["missing column", None, np.nan])
def test_no_roi_means_the_whole_image(case_files, roi_path):
    cases = sources(dict(id="a", mask_path=case_files["mask_path"]))
    cases = cases.drop(columns="roi_path") if roi_path == "missing column" else cases.assign(roi_path=roi_path)
    cell = cell_row(evaluate_sources(cases, case_files["pred_dir"], CLASSES, CFG))
    assert (cell.tp, cell.fp, cell.fn) == (36, 16, 0)
    assert cell.tp + cell.fp + cell.fn + cell.tn == SIZE * SIZE
    assert cell.dice == pytest.approx(72 / 88) and not cell.roi


def test_roi_of_a_colour_mask_is_any_channel_above_zero(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0, 2] = 7
    colour[1, 1, 0] = 200
    cv2.imwrite(str(tmp_path / "roi.png"), colour)
    roi = read_source_roi(dict(kind="image", roi_path=str(tmp_path / "roi.png")))
    assert roi.dtype == bool and roi.shape == (1, 4, 4) and roi.sum() == 2 and roi[0, 0, 0] and roi[0, 1, 1]


def test_spacing_scales_the_surface_distances_x_first(tmp_path):
    gt = np.zeros((SIZE, SIZE), np.uint8)
    gt[5:10, 5:10] = 255
    pred = np.roll(gt, 2, axis=0)  # shifted down by two rows: along y
    preds = tmp_path / "pred"
    preds.mkdir()
    write_png(preds / "b.png", pred)
    cases = sources(dict(id="b", mask_path=write_png(tmp_path / "b.png", gt)))
    in_pixels = cell_row(evaluate_sources(cases, str(preds), CLASSES, CFG))
    scaled = cell_row(evaluate_sources(cases, str(preds), CLASSES, {**CFG, "spacing": [3.0, 3.0]}))
    assert in_pixels.hd95 == pytest.approx(2.0)
    assert scaled.hd95 == pytest.approx(3 * in_pixels.hd95) and scaled.assd == pytest.approx(3 * in_pixels.assd)
    assert scaled.dice == in_pixels.dice
    tall = cell_row(evaluate_sources(cases, str(preds), CLASSES, {**CFG, "spacing": [1.0, 5.0]}))  # [x, y]
    assert tall.hd95 == pytest.approx(10.0)  # two rows of 5 (y), not two of 1 (x)


def test_summary_has_one_row_per_class_and_no_statistics_of_flags(case_files):
    shutil.copy(f"{case_files['pred_dir']}/a.png", f"{case_files['pred_dir']}/c.png")
    cases = sources(dict(id="a", mask_path=case_files["mask_path"], roi_path=case_files["roi_path"]),
                    dict(id="c", mask_path=case_files["mask_path"]))
    per_case = evaluate_sources(cases, case_files["pred_dir"], CLASSES, CFG, threads=2)
    assert per_case["roi"].tolist() == [True, True, False, False]
    summary = summarize(per_case)
    assert summary["class_name"].tolist() == ["background", "cell"] and summary["n_cases"].tolist() == [2, 2]
    assert summary.loc[1, "dice_mean"] == pytest.approx((1 + 72 / 88) / 2)
    assert not any(column.startswith(("roi", "gt_empty")) for column in summary.columns)
    assert summary["empty_false_positives"].tolist() == [0, 0]
    per_case.loc[per_case["id"] == "c", ["gt_empty", "dice"]] = [True, 0.0]  # c's cell predicted where none is
    assert summarize(per_case)["empty_false_positives"].tolist() == [1, 1]


def test_ignored_pixels_are_left_out(case_files, tmp_path):
    mask = cv2.imread(case_files["mask_path"], cv2.IMREAD_UNCHANGED)
    mask[12:16, 14:18] = 9  # the prediction's false blob lies on pixels of the ignored value
    classes = pd.concat([CLASSES.assign(ignore=False), pd.DataFrame(dict(index=[255], name=["ignore"], value=[9],
                                                                         ignore=[True]))], ignore_index=True)
    cases = sources(dict(id="a", mask_path=write_png(tmp_path / "ignore.png", mask)))
    cell = cell_row(evaluate_sources(cases, case_files["pred_dir"], classes, CFG))
    assert (cell.tp, cell.fp, cell.fn, cell.tn) == (36, 0, 0, SIZE * SIZE - 36 - 16)


def volume_source(path, name: str, depth: int) -> pd.DataFrame:
    """The manifest row of a NIfTI volume used as its own image and mask, sliced along its third axis."""
    return sources(dict(id=name, kind="volume", slices=depth, slice_axis=2, image_path=str(path),
                        mask_path=str(path)))


def test_one_slice_volume_is_scored_in_2d(tmp_path):
    import nibabel as nib

    gt = np.zeros((6, 7), np.uint8)
    gt[1:5, 2:6] = 1
    image, preds = tmp_path / "xray.nii.gz", tmp_path / "pred"
    nib.save(nib.Nifti1Image(gt * 255, np.diag([0.5, 2.0, 1.0, 1.0])), image)  # a 2D NIfTI file
    preds.mkdir()
    pred = gt.copy()
    pred[1] = 0
    nib.save(nib.Nifti1Image(pred * 255, np.diag([0.5, 2.0, 1.0, 1.0])), preds / "xray.nii.gz")
    cell = cell_row(evaluate_sources(volume_source(image, "xray", 1), str(preds), CLASSES, CFG))
    in_2d = case_metrics(pred, gt, 2, spacing=(0.5, 2.0))[1]
    in_3d = case_metrics(pred[..., None], gt[..., None], 2, spacing=(0.5, 2.0, 1.0))[1]  # every voxel a surface
    assert in_2d["assd"] != in_3d["assd"]
    assert (cell.dice, cell.assd, cell.hd95, cell.nsd) == (in_2d["dice"], in_2d["assd"], in_2d["hd95"], in_2d["nsd"])


def test_volume_is_one_case_scored_in_3d(tmp_path):
    import nibabel as nib

    gt = np.zeros((6, 7, 4), np.uint8)
    gt[1:4, 2:5, 1:3] = 1
    image = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(gt * 255, np.diag([0.5, 0.5, 2.0, 1.0])), image)
    preds = tmp_path / "pred"
    preds.mkdir()
    pred = gt.copy()
    pred[1, 2, 1] = 0
    nib.save(nib.Nifti1Image(pred * 255, np.diag([0.5, 0.5, 2.0, 1.0])), preds / "vol.nii.gz")
    table = evaluate_sources(volume_source(image, "vol", 4), str(preds), CLASSES, CFG)
    cell = cell_row(table)
    assert table["id"].tolist() == ["vol", "vol"]
    assert (cell.tp, cell.fn, cell.fp) == (17, 1, 0) and cell.dice == pytest.approx(34 / 35)


def test_a_class_found_in_no_unit_that_holds_it_is_named():
    """'left' is predicted only where it is not (b), never on a true pixel (a)."""
    per_case = pd.DataFrame({"id": ["a", "a", "a", "b", "b", "b"], "class": [0, 1, 2] * 2,
                             "class_name": ["bg", "left", "right"] * 2, "dice": 0.5, "tp": [9, 0, 4, 9, 0, 5],
                             "gt_empty": [False, False, False, False, True, False],
                             "pred_empty": [False, True, False, False, False, False]})
    summary = summarize(per_case)
    assert summary[["held_units", "missed_units", "empty_false_positives"]].values.tolist() == [
        [2, 0, 0], [1, 1, 1], [2, 0, 0]]
    assert unpredicted_notes(summary) == [
        "class 'left' is found in none of the 1 test unit(s) whose ground truth holds it (not one predicted pixel of "
        "it on a true one: Dice 0 in each, while precision counts 1 where nothing is predicted): the model has not "
        "learned it; train longer (train.budget_minutes) or on more cases that hold it"]
    assert unpredicted_notes(summarize(per_case.assign(tp=3))) == []
    assert unpredicted_notes(summarize(per_case.assign(gt_empty=[False, True, False, False, True, False]))) == []
