"""Evaluation: ROI restriction from the manifest, pixel spacing, and the summary table."""

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from unetflow.evaluate.evaluate import case_roi, evaluate_cases, summarize
from unetflow.evaluate.metrics import case_metrics

SIZE = 20
CLASSES = pd.DataFrame({"index": [0, 1], "name": ["background", "cell"], "value": [0, 255]})
CFG = dict(tolerance=1.0, spacing=None)


def write_png(path, array: np.ndarray) -> str:
    cv2.imwrite(str(path), array.astype(np.uint8))
    return str(path)


def preprocessed(folder, **masks: np.ndarray) -> pd.DataFrame:
    """Preprocessed arrays (the ground truth as class indices) of cases given as id=0/255 mask."""
    rows = []
    for case_id, mask in masks.items():
        path = folder / f"{case_id}.npz"
        np.savez(path, image=np.zeros((1, *mask.shape), np.float16), labels=(mask > 0).astype(np.uint8))
        rows.append(dict(id=case_id, array_path=str(path)))
    return pd.DataFrame(rows)


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
                pred_dir=str(preds), arrays=preprocessed(tmp_path, a=gt, c=gt))


def cell_row(table: pd.DataFrame) -> pd.Series:
    return table[table["class"] == 1].iloc[0]


def test_roi_restricts_the_counts_to_its_pixels(case_files):
    cases = pd.DataFrame({"id": ["a"], "mask_path": [case_files["mask_path"]], "roi_path": [case_files["roi_path"]]})
    cell = cell_row(evaluate_cases(cases, case_files["pred_dir"], CLASSES, case_files["arrays"], CFG))
    assert (cell.tp, cell.fp, cell.fn) == (36, 0, 0)
    assert cell.tp + cell.fp + cell.fn + cell.tn == SIZE * SIZE // 2
    assert cell.dice == 1.0 and bool(cell.roi)


@pytest.mark.parametrize("roi_path", ["missing column", None, np.nan])
def test_no_roi_means_the_whole_image(case_files, roi_path):
    cases = pd.DataFrame({"id": ["a"], "mask_path": [case_files["mask_path"]]})
    if roi_path != "missing column":
        cases["roi_path"] = [roi_path]
    cell = cell_row(evaluate_cases(cases, case_files["pred_dir"], CLASSES, case_files["arrays"], CFG))
    assert (cell.tp, cell.fp, cell.fn) == (36, 16, 0)
    assert cell.tp + cell.fp + cell.fn + cell.tn == SIZE * SIZE
    assert cell.dice == pytest.approx(72 / 88) and not cell.roi


def test_roi_of_a_colour_mask_is_any_channel_above_zero(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0, 2] = 7
    colour[1, 1, 0] = 200
    cv2.imwrite(str(tmp_path / "roi.png"), colour)
    roi = case_roi(pd.Series({"roi_path": str(tmp_path / "roi.png")}))
    assert roi.dtype == bool and roi.sum() == 2 and roi[0, 0] and roi[1, 1]


def test_spacing_scales_the_surface_distances(tmp_path):
    gt = np.zeros((SIZE, SIZE), np.uint8)
    gt[5:10, 5:10] = 255
    pred = np.roll(gt, 2, axis=0)  # shifted down by two rows
    preds = tmp_path / "pred"
    preds.mkdir()
    write_png(preds / "b.png", pred)
    cases = pd.DataFrame({"id": ["b"], "mask_path": [write_png(tmp_path / "b.png", gt)]})
    arrays = preprocessed(tmp_path, b=gt)
    in_pixels = cell_row(evaluate_cases(cases, str(preds), CLASSES, arrays, CFG))
    scaled = cell_row(evaluate_cases(cases, str(preds), CLASSES, arrays, {**CFG, "spacing": [3.0, 3.0]}))
    assert in_pixels.hd95 == pytest.approx(2.0)
    assert scaled.hd95 == pytest.approx(3 * in_pixels.hd95) and scaled.assd == pytest.approx(3 * in_pixels.assd)
    assert scaled.dice == in_pixels.dice


def test_summary_has_one_row_per_class_and_no_statistics_of_flags(case_files):
    cases = pd.DataFrame({"id": ["a", "c"], "mask_path": [case_files["mask_path"]] * 2,
                          "roi_path": [case_files["roi_path"], None]})
    shutil.copy(f"{case_files['pred_dir']}/a.png", f"{case_files['pred_dir']}/c.png")
    per_case = evaluate_cases(cases, case_files["pred_dir"], CLASSES, case_files["arrays"], CFG, threads=2)
    assert per_case["roi"].tolist() == [True, True, False, False]
    summary = summarize(per_case)
    assert summary["class_name"].tolist() == ["background", "cell"] and summary["n_cases"].tolist() == [2, 2]
    assert summary.loc[1, "dice_mean"] == pytest.approx((1 + 72 / 88) / 2)
    assert not any(column.startswith(("roi", "gt_empty")) for column in summary.columns)


def test_ignored_pixels_are_left_out(case_files, tmp_path):
    cases = pd.DataFrame({"id": ["a"], "mask_path": [case_files["mask_path"]]})
    arrays = case_files["arrays"].iloc[:1]
    labels = np.load(arrays.iloc[0]["array_path"])["labels"]
    labels[12:16, 14:18] = 255  # the prediction's false blob lies on ignored pixels
    np.savez(arrays.iloc[0]["array_path"], image=np.zeros((1, SIZE, SIZE), np.float16), labels=labels)
    cell = cell_row(evaluate_cases(cases, case_files["pred_dir"], CLASSES, arrays, CFG))
    assert (cell.tp, cell.fp, cell.fn, cell.tn) == (36, 0, 0, SIZE * SIZE - 36 - 16)


def test_one_slice_volume_is_scored_in_2d(tmp_path):
    import nibabel as nib

    gt = np.zeros((6, 7), np.uint8)
    gt[1:5, 2:6] = 1
    image, preds = tmp_path / "xray.nii.gz", tmp_path / "pred"
    nib.save(nib.Nifti1Image(gt.astype(np.float32), np.diag([0.5, 2.0, 1.0, 1.0])), image)  # a 2D NIfTI file
    preds.mkdir()
    pred = gt.copy()
    pred[1] = 0
    nib.save(nib.Nifti1Image(pred * 255, np.diag([0.5, 2.0, 1.0, 1.0])), preds / "xray.nii.gz")
    cases = pd.DataFrame({"id": ["xray_z0"], "kind": "volume", "volume": "xray", "slice": [0], "slice_axis": 2,
                          "image_path": str(image), "mask_path": str(image)})
    cell = cell_row(evaluate_cases(cases, str(preds), CLASSES, preprocessed(tmp_path, xray_z0=gt), CFG))
    in_2d = case_metrics(pred, gt, 2, spacing=(0.5, 2.0))[1]
    in_3d = case_metrics(pred[..., None], gt[..., None], 2, spacing=(0.5, 2.0, 1.0))[1]  # every voxel a surface
    assert in_2d["assd"] != in_3d["assd"]
    assert (cell.dice, cell.assd, cell.hd95, cell.nsd) == (in_2d["dice"], in_2d["assd"], in_2d["hd95"], in_2d["nsd"])


def test_volume_is_one_case_scored_in_3d(tmp_path):
    import nibabel as nib

    gt = np.zeros((6, 7, 4), np.uint8)
    gt[1:4, 2:5, 1:3] = 1
    image = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(gt.astype(np.float32), np.diag([0.5, 0.5, 2.0, 1.0])), image)
    preds = tmp_path / "pred"
    preds.mkdir()
    pred = gt.copy()
    pred[1, 2, 1] = 0
    nib.save(nib.Nifti1Image(pred * 255, np.diag([0.5, 0.5, 2.0, 1.0])), preds / "vol.nii.gz")
    cases = pd.DataFrame({"id": [f"vol_z{i}" for i in range(4)], "kind": "volume", "volume": "vol",
                          "slice": range(4), "slice_axis": 2, "image_path": str(image), "mask_path": str(image)})
    arrays = preprocessed(tmp_path, **{f"vol_z{i}": gt[:, :, i] for i in range(4)})
    table = evaluate_cases(cases, str(preds), CLASSES, arrays, CFG)
    cell = cell_row(table)
    assert table["id"].tolist() == ["vol", "vol"]
    assert (cell.tp, cell.fn, cell.fp) == (17, 1, 0) and cell.dice == pytest.approx(34 / 35)
