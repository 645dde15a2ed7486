"""Seeded train/val/test split, optionally keeping groups (e.g. a patient) on one side."""

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

SPLITS = ("train", "val", "test")


def draw(ids: pd.Series, fraction: float, seed: int, groups: pd.Series | None) -> tuple[pd.Series, pd.Series]:
    """Split ids into (rest, drawn) with `fraction` of them (of the groups, with groups) drawn."""
    if fraction == 0:
        return ids, ids.iloc[:0]
    if groups is None:
        rest, drawn = train_test_split(ids, test_size=fraction, random_state=seed)
        return rest, drawn
    rest_index, drawn_index = next(GroupShuffleSplit(1, test_size=fraction, random_state=seed).split(ids, groups=groups))
    return ids.iloc[rest_index], ids.iloc[drawn_index]


def split_cases(cases: pd.DataFrame, train: float, val: float, test: float, seed: int = 0,
                group_by: str | None = None) -> pd.DataFrame:
    """Table (id, split[, group]): test drawn first, then val from the rest; the same seed and data, the same split."""
    total = train + val + test
    if abs(total - 1) > 1e-6:
        raise ValueError(f"split: train + val + test must be 1, got {train} + {val} + {test} = {total:g}")
    if group_by is not None and group_by not in cases:
        raise ValueError(f"split.group_by: no column '{group_by}' in the manifest (columns: {list(cases.columns)})")
    cases = cases.sort_values("id").reset_index(drop=True)
    groups = cases[group_by] if group_by else None
    rest, test_ids = draw(cases["id"], test, seed, groups)
    rest_groups = groups.loc[rest.index] if group_by else None
    train_ids, val_ids = draw(rest, val / (train + val), seed, rest_groups)
    table = pd.concat([pd.DataFrame({"id": ids, "split": name})
                       for name, ids in zip(SPLITS, (train_ids, val_ids, test_ids))])
    empty = [name for name, fraction in zip(SPLITS, (train, val, test)) if fraction > 0 and not (table.split == name).any()]
    if empty:
        raise ValueError(f"split: {len(cases)} cases leave the {', '.join(empty)} split(s) empty; "
                         "use more data or other fractions")
    if group_by:
        table[group_by] = table["id"].map(cases.set_index("id")[group_by])
    return table.sort_values("id").reset_index(drop=True)


def ids_in(splits: pd.DataFrame, name: str) -> list[str]:
    """Case ids of one split, or of every split for 'all'."""
    return splits["id"].tolist() if name == "all" else splits.loc[splits["split"] == name, "id"].tolist()
