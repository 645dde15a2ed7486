"""Object (instance) metrics of a predicted instance mask against a ground-truth one: both are integer id maps
(0 = background, 1..N = one id per object; ids need not be consecutive).

- Matching: predicted and true objects are paired one to one by maximal total IoU (Hungarian assignment, as
  StarDist's `matching`); a pair counts as a true positive at threshold t when its IoU >= t. For t >= 0.5 at most
  one partner per object can pass, so the assignment equals "the unique partner with IoU > 0.5".
- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN), at IoU 0.5.
- mAP (StarDist's "average precision", Schmidt et al. 2018): TP / (TP + FP + FN), averaged over the IoU thresholds
  0.5, 0.55, ..., 0.9 (MAP_THRESHOLDS, nine values; 0.95 is left out as StarDist reports it).
- AJI, aggregated Jaccard index (Kumar et al. 2017): every true object adds its intersection and union with the
  predicted object of highest IoU to C and U; predicted objects never picked add their area to U; AJI = C / U.
- PQ, panoptic quality (Kirillov et al. 2019): sum of the IoUs of the TP pairs at 0.5 / (TP + FP/2 + FN/2).

Empty cases follow `unetflow.evaluate.metrics`: no object in either mask scores 1 everywhere; objects in one only, 0.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCH_THRESHOLD = 0.5
MAP_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.9001, 0.05), 2).tolist())
HEADLINE_METRICS = ("object_f1", "object_map", "aji", "pq")  # the ones the logs, report and leaderboard show


def overlap_table(gt: np.ndarray, pred: np.ndarray) -> dict:
    """The overlaps of two id maps of one shape: gt_ids, pred_ids, gt_area, pred_area (pixels per object),
    inter and iou (n_gt, n_pred) arrays."""
    if gt.shape != pred.shape:
        raise ValueError(f"instance masks differ in shape: ground truth {gt.shape}, prediction {pred.shape}")
    gt_ids, gt_index = np.unique(gt, return_inverse=True)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    counts = np.zeros((len(gt_ids), len(pred_ids)), np.int64)
    np.add.at(counts, (gt_index.ravel(), pred_index.ravel()), 1)
    gt_area, pred_area = counts.sum(1), counts.sum(0)
    gt_keep, pred_keep = gt_ids != 0, pred_ids != 0
    inter = counts[np.ix_(gt_keep, pred_keep)]
    union = gt_area[gt_keep, None] + pred_area[None, pred_keep] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
    return dict(gt_ids=gt_ids[gt_keep], pred_ids=pred_ids[pred_keep], gt_area=gt_area[gt_keep],
                pred_area=pred_area[pred_keep], inter=inter, iou=iou)


def assigned_ious(iou: np.ndarray) -> np.ndarray:
    """The IoUs of the one-to-one assignment of maximal total IoU (pairs without overlap left out)."""
    if iou.size == 0:
        return np.zeros(0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    paired = iou[rows, cols]
    return paired[paired > 0]


def counts_at(paired: np.ndarray, n_gt: int, n_pred: int, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) when assigned pairs with IoU >= threshold are true positives."""
    tp = int((paired >= threshold).sum())
    return tp, n_pred - tp, n_gt - tp


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 1 when both are 0 (nothing to find and nothing found)."""
    return 1.0 if denominator == 0 and numerator == 0 else (numerator / denominator if denominator else 0.0)


def aggregated_jaccard(table: dict) -> float:
    """AJI from an `overlap_table`."""
    gt_area, pred_area, inter, iou = table["gt_area"], table["pred_area"], table["inter"], table["iou"]
    if not gt_area.size and not pred_area.size:
        return 1.0
    intersection, union, used = 0, 0, np.zeros(len(pred_area), bool)
    for row in range(len(gt_area)):
        best = int(np.argmax(iou[row])) if pred_area.size else -1
        if best >= 0 and inter[row, best] > 0:
            intersection += inter[row, best]
            union += gt_area[row] + pred_area[best] - inter[row, best]
            used[best] = True
        else:
            union += gt_area[row]
    union += pred_area[~used].sum()
    return float(intersection / union)


def object_metrics(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Object metrics of one case (see the module docstring): counts, precision/recall/F1 and mean matched IoU
    at IoU 0.5, mAP over MAP_THRESHOLDS, AJI and PQ."""
    table = overlap_table(gt, pred)
    n_gt, n_pred = table["iou"].shape
    paired = assigned_ious(table["iou"])
    tp, fp, fn = counts_at(paired, n_gt, n_pred, MATCH_THRESHOLD)
    matched = paired[paired >= MATCH_THRESHOLD]
    average_precisions = [ratio(t, t + f + n) for t, f, n in
                          (counts_at(paired, n_gt, n_pred, threshold) for threshold in MAP_THRESHOLDS)]
    return dict(
        objects_gt=n_gt, objects_pred=n_pred, object_tp=tp, object_fp=fp, object_fn=fn,
        object_precision=ratio(tp, tp + fp), object_recall=ratio(tp, tp + fn),
        object_f1=ratio(2 * tp, 2 * tp + fp + fn),
        matched_iou=float(matched.mean()) if tp else (1.0 if n_gt == n_pred == 0 else 0.0),
        object_map=float(np.mean(average_precisions)),
        aji=aggregated_jaccard(table),
        pq=ratio(float(matched.sum()), tp + fp / 2 + fn / 2),
    )
