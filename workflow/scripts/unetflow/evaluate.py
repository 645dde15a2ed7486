"""Evaluation: per case and class metrics of predicted masks against the ground truth, and their summary.

Empty masks: see `unetflow.metrics` for the convention (a class absent from both ground truth and prediction
scores Dice = IoU = 1; absent from one only, 0). The flags gt_empty and pred_empty are stored with every row.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from unetflow.io import read_mask
from unetflow.metrics import case_metrics
from unetflow.preprocess import map_labels

SUMMARY_STATS = ("mean", "median", "std")


def evaluate_case(case: pd.Series, pred_dir: str, values: list[int], cfg: dict) -> list[dict]:
    """Metric rows (one per class) of one case."""
    gt = map_labels(read_mask(case["mask_path"]), values)
    pred = map_labels(read_mask(Path(pred_dir, f"{case['id']}.png")), values)
    rows = case_metrics(pred, gt, len(values), tolerance=cfg["tolerance"])
    return [dict(id=case["id"], **row) for row in rows]


def evaluate_cases(cases: pd.DataFrame, pred_dir: str, classes: pd.DataFrame, cfg: dict,
                   threads: int = 1) -> pd.DataFrame:
    """Per case and class metrics, with the class names."""
    values = classes.sort_values("index")["value"].tolist()
    with ThreadPoolExecutor(max(1, threads)) as pool:
        nested = pool.map(lambda row: evaluate_case(row, pred_dir, values, cfg), (r for _, r in cases.iterrows()))
    table = pd.DataFrame([row for rows in nested for row in rows])
    table.insert(2, "class_name", table["class"].map(classes.set_index("index")["name"]))
    return table


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean, median and std over cases of every metric, per class (columns like dice_mean)."""
    metrics = [c for c in per_case.columns if per_case[c].dtype.kind == "f"]
    summary = per_case.groupby(["class", "class_name"])[metrics].agg(list(SUMMARY_STATS))
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary.insert(0, "n_cases", per_case.groupby(["class", "class_name"]).size())
    return summary.reset_index()
