"""The cases of a split or fold, read from the split table (`split/splits.parquet`) that the split stage wrote.

Apart from `unetflow.data.split` so that the stages reading the table (train, predict, evaluate) do not import
scikit-learn, which only drawing a split needs.
"""

import pandas as pd


def ids_in(splits: pd.DataFrame, name: str) -> list[str]:
    """Case ids of one split, or of every split for 'all'."""
    return splits["id"].tolist() if name == "all" else splits.loc[splits["split"] == name, "id"].tolist()


def fold_ids(splits: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """Training and validation ids of one fold: with k-fold splits (a `fold` column numbering the fold in which
    each non-test case validates) fold k validates on its cases and trains on the other folds; otherwise the
    train/val split."""
    pool = splits[splits["split"] != "test"]
    if "fold" in pool and pool["fold"].nunique() > 1:
        validates = pool["fold"] == fold
    else:
        validates = pool["split"] == "val"
    return pool.loc[~validates, "id"].tolist(), pool.loc[validates, "id"].tolist()


def fold_numbers(splits: pd.DataFrame) -> list[int]:
    """The folds a split table trains: 0..K-1 with k-fold splits, else the one train/val split, 0."""
    pool = splits[splits["split"] != "test"]
    return sorted(int(fold) for fold in pool["fold"].unique()) if "fold" in pool and pool["fold"].nunique() > 1 else [0]
