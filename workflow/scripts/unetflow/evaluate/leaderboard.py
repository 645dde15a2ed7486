"""Leaderboard: experiments compared on the same test cases, one row per experiment and class; 2D and 3D U-Nets of
one data set side by side (columns dims and patch_size). The rank is the mean test Dice over the foreground classes:
1..K-1, and class 0 too when it is not a dominant background of the training pixels (the rule of the planned
`train.dice_background: auto`, so a minority stored as 0, as ISBI 2012's membranes, counts whatever value it has;
the same classes for every experiment of a data set, whatever each one set); column `ranked`. In the instance mode
the rows carry the mean object metrics too (OBJECT_COLUMNS, on the objects row) and the rank is by the mean object
mAP (StarDist's average precision over IoU 0.5:0.9), which a pixel Dice that merges touching objects hides; column
`rank_by` names the metric."""

import json
from pathlib import Path

import pandas as pd

from unetflow.evaluate.object_metrics import HEADLINE_METRICS
from unetflow.plan.background import dominant_background

OBJECT_COLUMNS = [f"{metric}_mean" for metric in HEADLINE_METRICS]


def model_traits(plan_path: str) -> dict:
    """The U-Net of an experiment from its plan (<experiment>/plan.json): dims, resolution, patch_size (sides joined by
    'x'), depth, parameters (trained ones: buffers such as norm statistics excluded) and started_from (the train.init
    package, whose training time its own does not include; None); and first_ranked, the first class the rank counts
    (0 when class 0 is not a dominant background of the training pixels, else 1)."""
    plan = json.loads(Path(plan_path).read_text())
    settings = plan["settings"]
    return dict(dims=int(settings["dims"]["value"]), resolution=float(settings["resolution"]["value"]),
                patch_size="x".join(map(str, settings["patch_size"]["value"])), depth=int(settings["depth"]["value"]),
                parameters=int(plan["parameters"]),
                started_from=(plan.get("init") or {}).get("package"),
                first_ranked=int(dominant_background(plan["traits"]["class_shares"])))


def experiment_rows(name: str, summary: pd.DataFrame, fold_metrics: list[pd.DataFrame],
                    model: dict) -> pd.DataFrame:
    """Test Dice/IoU per class with their spread, plus the best validation Dice, training time and steps of every
    model the package holds (`models` of them), and the model's dims, resolution, patch size, depth, parameters and
    the package it started from (`model_traits`)."""
    objects = [column for column in OBJECT_COLUMNS if column in summary]
    empty = [column for column in ("empty_false_positives", "held_units", "missed_units") if column in summary]
    rows = summary[["class", "class_name", "n_cases", "dice_mean", "dice_median", "dice_std", "iou_mean", "iou_std",
                    *empty, *objects]].copy()
    rows.insert(0, "experiment", name)
    rows.insert(1, "dims", model["dims"])
    rows.insert(2, "resolution", model["resolution"])
    rows.insert(3, "patch_size", model["patch_size"])
    rows.insert(4, "depth", model["depth"])
    best_val = [m["val_dice"].max() for m in fold_metrics]
    rows["val_dice_folds_mean"] = pd.Series(best_val).mean()
    rows["val_dice_folds_std"] = pd.Series(best_val).std(ddof=0)
    rows["train_seconds"] = sum(m["seconds"].sum() for m in fold_metrics)
    rows["train_steps"] = sum(int(m["steps"].max()) for m in fold_metrics)
    rows["models"] = len(fold_metrics)
    rows["parameters"] = model["parameters"]
    rows["started_from"] = model["started_from"]
    rows["ranked"] = rows["class"] >= model["first_ranked"]
    return rows


def members_traits(plan_paths: list[str]) -> dict:
    """`model_traits` of the first plan, its parameters those of one model of each plan (an ensemble's members)."""
    traits = [model_traits(path) for path in plan_paths]
    return dict(traits[0], parameters=sum(member["parameters"] for member in traits))


def leaderboard(experiments: dict[str, dict]) -> pd.DataFrame:
    """experiments: name -> {summary, metrics (the paths of every model the package holds), plans (plan.json paths of
    the experiments that trained them, its own or that of its train section first), trained_by (their names joined by
    '+')}; ranked by the mean test Dice of the foreground classes (column `ranked`), in the instance mode by the mean
    object mAP, best first."""
    table = pd.concat(experiment_rows(name, pd.read_parquet(paths["summary"]),
                                      [pd.read_parquet(p) for p in paths["metrics"]], members_traits(paths["plans"]))
                      .assign(trained_by=paths.get("trained_by", name)) for name, paths in experiments.items())
    metric = "object_map_mean" if "object_map_mean" in table else "dice_mean"
    table["rank_by"] = metric.removesuffix("_mean")
    score = table[table["ranked"]].groupby("experiment")[metric].mean()
    table["rank"] = table["experiment"].map(score.rank(ascending=False, method="min")).astype(int)
    return table.sort_values(["rank", "experiment", "class"]).reset_index(drop=True)


def empty_case_notes(table: pd.DataFrame) -> list[str]:
    """One line per experiment and ranked class whose mean test Dice counts units without the class in the ground
    truth but with stray predicted pixels (Dice 0 each), with its median beside the mean; and one per ranked class
    found in none of the units that hold it, whose mean comes from the units without it in the ground truth."""
    flagged = table[table["ranked"] & (table.get("empty_false_positives", 0) > 0)]
    notes = [f"{row.experiment}, class '{row.class_name}': {int(row.empty_false_positives)} of {row.n_cases} test "
             f"unit(s) lack it in the ground truth but have it in the prediction, each scoring Dice 0 (mean "
             f"{row.dice_mean:.4f}, median {row.dice_median:.4f})" for row in flagged.itertuples()]
    missed = table[table["ranked"] & (table.get("held_units", 0) > 0) & (table.get("missed_units", -1) ==
                                                                           table.get("held_units", 0))]
    return notes + [f"{row.experiment}, class '{row.class_name}': found in none of the {int(row.held_units)} test "
                    f"unit(s) that hold it; its mean Dice {row.dice_mean:.4f} comes from the units without it in the "
                    f"ground truth ({row.n_cases - int(row.held_units)})" for row in missed.itertuples()]
