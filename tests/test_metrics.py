"""Tests for unetflow.evaluate.metrics: hand-computed cases, empty conventions, ROI, spacing, 3D, MONAI parity."""

import math
import warnings

import cv2
import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDiceMetric,
    SurfaceDistanceMetric,
    compute_confusion_matrix_metric,
    get_confusion_matrix,
)
from scipy import ndimage

from unetflow.evaluate.metrics import case_metrics

ATOL = 1e-5


def square(shape, top, left, size):
    """Label map (int) with a size x size square of class 1 at (top, left)."""
    labels = np.zeros(shape, dtype=np.int64)
    labels[top : top + size, left : left + size] = 1
    return labels


def blob_labels(rng, shape, num_classes, sigma=3.0):
    """Seeded random smooth blobs: argmax of smoothed noise over classes, as an int label map."""
    noise = ndimage.gaussian_filter(rng.random((num_classes, *shape)), sigma=(0, *[sigma] * len(shape)))
    return noise.argmax(axis=0)


def one_hot(labels, num_classes, roi=None):
    """(1, K, *spatial) float tensor; all channels zero outside roi."""
    encoded = np.stack([labels == c for c in range(num_classes)]).astype(np.float32)
    if roi is not None:
        encoded *= roi
    return torch.from_numpy(encoded)[None]


def monai_values(pred, gt, num_classes, spacing=None, tolerance=1.0, roi=None):
    """Per-class MONAI 1.6.1 values (NaN/inf where MONAI gives them), keyed like our rows."""
    yp, y = one_hot(pred, num_classes, roi), one_hot(gt, num_classes, roi)
    common = {"include_background": True, "reduction": "none"}
    confusion = get_confusion_matrix(yp, y, include_background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {
            "dice": DiceMetric(**common)(yp, y),
            "iou": MeanIoU(**common)(yp, y),
            "precision": compute_confusion_matrix_metric("precision", confusion),
            "recall": compute_confusion_matrix_metric("recall", confusion),
            "hd95": HausdorffDistanceMetric(percentile=95, **common)(yp, y, spacing=spacing),
            "assd": SurfaceDistanceMetric(symmetric=True, **common)(yp, y, spacing=spacing),
            "nsd": SurfaceDiceMetric([tolerance] * num_classes, **common)(yp, y, spacing=spacing),
        }
    values = {key: value[0].double().numpy() for key, value in values.items()}
    values["tp"], values["fp"], values["tn"], values["fn"] = confusion[0].double().numpy().T
    return values


def assert_matches_monai(pred, gt, num_classes, spacing=None, tolerance=1.0, roi=None):
    """Every metric MONAI defines for a class (finite there) equals ours within ATOL."""
    rows = case_metrics(pred, gt, num_classes, spacing=spacing, tolerance=tolerance, roi=roi)
    reference = monai_values(pred, gt, num_classes, spacing, tolerance, roi)
    if roi is not None:
        del reference["tn"]  # MONAI counts pixels outside the ROI as true negatives; we do not
    compared = 0
    for key, expected in reference.items():
        ours = np.array([row[key] for row in rows], dtype=float)
        defined = np.isfinite(expected)
        np.testing.assert_allclose(ours[defined], expected[defined], atol=ATOL, rtol=0, err_msg=key)
        compared += defined.sum()
    assert compared > 0


def rows_by_class(rows):
    return {row["class"]: row for row in rows}


def test_shifted_square_counts_and_overlap_by_hand():
    gt = square((10, 10), 2, 2, 4)
    pred = square((10, 10), 2, 3, 4)  # shifted one column right: 12 shared pixels
    row = rows_by_class(case_metrics(pred, gt, 2))[1]
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (12, 4, 4, 80)
    assert row["dice"] == pytest.approx(24 / 32)
    assert row["iou"] == pytest.approx(12 / 20)
    assert row["precision"] == pytest.approx(12 / 16)
    assert row["recall"] == pytest.approx(12 / 16)
    background = rows_by_class(case_metrics(pred, gt, 2))[0]
    assert (background["tp"], background["fp"], background["fn"]) == (80, 4, 4)


def test_shifted_square_surface_by_hand():
    gt = square((10, 10), 2, 2, 4)
    pred = square((10, 10), 2, 3, 4)
    row = rows_by_class(case_metrics(pred, gt, 2, tolerance=0.5))[1]
    # Each 4x4 square has a 12-pixel ring. 6 pred ring pixels lie on the gt ring (rows 2 and 5,
    # columns 3..5); the other 6 are 1 away. Same by symmetry for gt -> pred.
    assert row["hd95"] == pytest.approx(1.0)
    assert row["assd"] == pytest.approx(12 / 24)
    assert row["nsd"] == pytest.approx(12 / 24)
    assert rows_by_class(case_metrics(pred, gt, 2, tolerance=1.0))[1]["nsd"] == pytest.approx(1.0)


def test_one_pixel_bump_hd95_is_interpolated_percentile():
    gt = square((12, 12), 2, 2, 6)
    pred = gt.copy()
    pred[1, 4] = 1  # one pixel sticking out above the top edge
    row = rows_by_class(case_metrics(pred, gt, 2))[1]
    # pred surface: the 20-pixel gt ring minus (2,4), now interior, plus the bump (1,4): 19 zeros
    # and one 1. gt -> pred: (2,4) is 1 away, 19 zeros. Linear q95 of 20 sorted values sits at
    # rank 0.95 * 19 = 18.05, between 0 and 1 -> 0.05.
    assert row["hd95"] == pytest.approx(0.05, abs=ATOL)  # float32 arithmetic, as in MONAI
    assert row["assd"] == pytest.approx(2 / 40)


def test_both_empty_is_perfect():
    labels = np.zeros((8, 8), dtype=np.int64)
    row = rows_by_class(case_metrics(labels, labels, 3))[2]
    assert row["gt_empty"] and row["pred_empty"]
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (0, 0, 0, 64)
    for key in ("dice", "iou", "precision", "recall", "nsd"):
        assert row[key] == 1.0
    assert row["hd95"] == row["assd"] == 0.0


def test_missed_structure_gets_worst_case_penalty():
    gt = square((8, 6), 1, 1, 3)
    pred = np.zeros_like(gt)
    row = rows_by_class(case_metrics(pred, gt, 2, spacing=(2.0, 0.5)))[1]
    assert row["gt_empty"] is False and row["pred_empty"] is True
    assert row["dice"] == row["iou"] == row["nsd"] == row["recall"] == 0.0
    assert row["precision"] == 1.0  # nothing predicted, so nothing predicted wrongly
    diagonal = math.hypot(7 * 2.0, 5 * 0.5)
    assert row["hd95"] == pytest.approx(diagonal)
    assert row["assd"] == pytest.approx(diagonal)


def test_false_positive_on_empty_gt_gets_worst_case_penalty():
    pred = square((6, 6), 0, 0, 2)
    gt = np.zeros_like(pred)
    row = rows_by_class(case_metrics(pred, gt, 2))[1]
    assert row["gt_empty"] is True and row["pred_empty"] is False
    assert row["dice"] == row["iou"] == row["nsd"] == row["precision"] == 0.0
    assert row["recall"] == 1.0
    assert row["hd95"] == row["assd"] == pytest.approx(math.hypot(5, 5))


def test_monai_gives_non_finite_values_where_we_use_the_convention():
    gt, empty = square((8, 8), 1, 1, 3), np.zeros((8, 8), dtype=np.int64)
    missed = monai_values(empty, gt, 2)
    assert missed["dice"][1] == 0.0 and not np.isfinite(missed["hd95"][1])
    hallucinated = monai_values(gt, empty, 2)
    assert np.isnan(hallucinated["dice"][1]) and not np.isfinite(hallucinated["hd95"][1])
    both_empty = monai_values(empty, empty, 2)
    assert np.isnan([both_empty[key][1] for key in ("dice", "iou", "hd95", "assd", "nsd")]).all()


def test_roi_restricts_counts_and_surfaces():
    gt = square((10, 10), 2, 2, 4)
    pred = square((10, 10), 2, 3, 4)
    roi = np.zeros((10, 10), dtype=bool)
    roi[:, :5] = True  # keeps gt columns 2..4 and pred columns 3..4
    row = rows_by_class(case_metrics(pred, gt, 2, roi=roi))[1]
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (8, 0, 4, 38)
    assert row["dice"] == pytest.approx(16 / 20)
    outside = np.zeros((10, 10), dtype=bool)
    outside[8:, 8:] = True
    row = rows_by_class(case_metrics(pred, gt, 2, roi=outside))[1]
    assert row["gt_empty"] and row["pred_empty"] and row["tn"] == 4


def test_roi_matches_monai_ignore_masking():
    rng = np.random.default_rng(3)
    pred, gt = blob_labels(rng, (40, 48), 3), blob_labels(rng, (40, 48), 3)
    roi = np.zeros((40, 48), dtype=bool)
    roi[5:35, 8:40] = True
    assert_matches_monai(pred, gt, 3, roi=roi, tolerance=2.0)


def test_anisotropic_spacing_scales_distances_per_axis():
    gt = square((12, 12), 2, 2, 4)
    down = square((12, 12), 4, 2, 4)  # shifted 2 rows
    right = square((12, 12), 2, 4, 4)  # shifted 2 columns
    spacing = (3.0, 0.5)
    assert rows_by_class(case_metrics(down, gt, 2, spacing=spacing))[1]["hd95"] == pytest.approx(6.0)
    assert rows_by_class(case_metrics(right, gt, 2, spacing=spacing))[1]["hd95"] == pytest.approx(1.0)
    assert_matches_monai(down, gt, 2, spacing=spacing, tolerance=1.5)


def test_scalar_spacing_scales_all_distances():
    rng = np.random.default_rng(4)
    pred, gt = blob_labels(rng, (32, 32), 2), blob_labels(rng, (32, 32), 2)
    unit, scaled = case_metrics(pred, gt, 2), case_metrics(pred, gt, 2, spacing=2.0, tolerance=2.0)
    for a, b in zip(unit, scaled):
        assert b["hd95"] == pytest.approx(2 * a["hd95"]) and b["assd"] == pytest.approx(2 * a["assd"])
        assert b["nsd"] == pytest.approx(a["nsd"]) and b["dice"] == a["dice"]


def test_3d_cube_shift():
    gt = np.zeros((8, 8, 8), dtype=np.int64)
    gt[2:5, 2:5, 2:5] = 1
    pred = np.roll(gt, 1, axis=2)
    row = rows_by_class(case_metrics(pred, gt, 2, spacing=(1.0, 1.0, 2.0)))[1]
    assert (row["tp"], row["fp"], row["fn"]) == (18, 9, 9)
    assert row["hd95"] == pytest.approx(2.0)  # the shifted face is one voxel (2 units) away
    assert_matches_monai(pred, gt, 2, spacing=(1.0, 1.0, 2.0), tolerance=1.0)


@pytest.mark.parametrize(
    ("seed", "spacing", "tolerance"),
    [(0, None, 1.0), (1, (0.7, 1.3), 1.5), (2, 2.0, 2.0), (3, (0.6, 0.6), 1.0)],
)
def test_random_2d_blobs_match_monai(seed, spacing, tolerance):
    rng = np.random.default_rng(seed)
    shape = (48, 56)
    gt = blob_labels(rng, shape, 4)
    pred = np.where(rng.random(shape) < 0.05, rng.integers(0, 4, shape), blob_labels(rng, shape, 4, sigma=2.5))
    assert_matches_monai(pred, gt, 4, spacing=spacing, tolerance=tolerance)


@pytest.mark.parametrize("threads", [1, 2])
def test_opencv_thread_count_does_not_change_parity(threads):
    rng = np.random.default_rng(5)
    pred, gt = blob_labels(rng, (64, 64), 3), blob_labels(rng, (64, 64), 3)
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        assert_matches_monai(pred, gt, 3, tolerance=1.5)
    finally:
        cv2.setNumThreads(previous)


def test_random_3d_blobs_match_monai():
    rng = np.random.default_rng(7)
    gt, pred = blob_labels(rng, (16, 20, 18), 3, sigma=2), blob_labels(rng, (16, 20, 18), 3, sigma=2)
    assert_matches_monai(pred, gt, 3, spacing=(2.0, 0.8, 0.8), tolerance=1.6)


def test_edge_cases_match_monai():
    shape = (16, 16)
    full, empty = np.ones(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    single = empty.copy()
    single[7, 7] = 1
    border = empty.copy()
    border[0, :] = 1
    line = empty.copy()
    line[3:12, 9] = 1
    for pred, gt in [(full, full), (full, single), (single, single), (border, line), (line, single), (full, border)]:
        assert_matches_monai(pred, gt, 2)


def test_bool_masks_are_accepted():
    gt = square((10, 10), 2, 2, 4).astype(bool)
    pred = square((10, 10), 2, 3, 4).astype(bool)
    assert case_metrics(pred, gt, 2) == case_metrics(pred.astype(np.uint8), gt.astype(np.int32), 2)


def test_invalid_inputs_are_rejected():
    labels = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError):
        case_metrics(labels, np.zeros((4, 5), dtype=np.int64), 2)
    with pytest.raises(ValueError):
        case_metrics(labels + 2, labels, 2)
    with pytest.raises(ValueError):
        case_metrics(labels.astype(float), labels, 2)
    with pytest.raises(ValueError):
        case_metrics(labels, labels, 2, roi=np.ones((3, 3), dtype=bool))
