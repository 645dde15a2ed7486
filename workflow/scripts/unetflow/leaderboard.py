"""Leaderboard: experiments compared on the same test cases, one row per experiment and class."""

import pandas as pd
import torch


def parameter_count(checkpoint_path: str) -> int:
    """Number of trained parameters (buffers such as norm statistics excluded) in a training checkpoint."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["model"]
    return sum(t.numel() for name, t in state.items() if not name.endswith(("running_mean", "running_var",
                                                                             "num_batches_tracked")))


def experiment_rows(name: str, summary: pd.DataFrame, fold_metrics: list[pd.DataFrame],
                    parameters: int) -> pd.DataFrame:
    """Test Dice/IoU per class with their spread, plus the folds' best validation Dice, training time, size."""
    rows = summary[["class", "class_name", "n_cases", "dice_mean", "dice_std", "iou_mean", "iou_std"]].copy()
    rows.insert(0, "experiment", name)
    best_val = [m["val_dice"].max() for m in fold_metrics]
    rows["val_dice_folds_mean"] = pd.Series(best_val).mean()
    rows["val_dice_folds_std"] = pd.Series(best_val).std(ddof=0)
    rows["train_seconds"] = sum(m["seconds"].sum() for m in fold_metrics)
    rows["parameters"] = parameters
    return rows


def leaderboard(experiments: dict[str, dict]) -> pd.DataFrame:
    """experiments: name -> {summary, metrics (list of paths), model (a checkpoint path)}; ranked by the mean
    foreground test Dice (classes 1..K-1), best first."""
    table = pd.concat(experiment_rows(name, pd.read_parquet(paths["summary"]),
                                      [pd.read_parquet(p) for p in paths["metrics"]], parameter_count(paths["model"]))
                      for name, paths in experiments.items())
    score = table[table["class"] > 0].groupby("experiment")["dice_mean"].mean()
    table["rank"] = table["experiment"].map(score.rank(ascending=False, method="min")).astype(int)
    return table.sort_values(["rank", "experiment", "class"]).reset_index(drop=True)
