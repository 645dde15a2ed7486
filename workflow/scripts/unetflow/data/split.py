"""Seeded train/val/test splits, k-fold cross-validation and fixed splits; groups never straddle two sides.

Cases are the sources of the ingest manifest (a 2D file, a TIFF stack, a NIfTI volume). Groups: `group_by` names a
manifest column, or `folder`: each image's folder below the one all images share (patient01 of
patient01/frame_000.png); `group_pattern` a regular expression's match in each case id (pat03 of pat03_pre); without
them the manifest's `group` column is used when present (a data.manifest's group column, else each source's own
stem), and `folder_leak_note` names the folders whose cases landed in several splits.
With `folds` K > 1 the test split is drawn first, and the rest is cut into K group-disjoint folds: column `fold`
holds the fold in which a case is validation (-1 for test cases); `split` is val for fold 0 and train otherwise.
"""

import os
import re
from pathlib import Path

import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from unetflow.data.pairing import SPLITS


def draw(ids: pd.Series, fraction: float, seed: int, groups: pd.Series | None) -> tuple[pd.Series, pd.Series]:
    """Split ids into (rest, drawn) with `fraction` of them (of the groups, with groups) drawn."""
    if fraction == 0:
        return ids, ids.iloc[:0]
    units = groups.nunique() if groups is not None else len(ids)
    if units < 2:
        raise ValueError(f"split: {len(ids)} case(s) in {units} group(s) left to draw from cannot be split further "
                         f"and leave a split empty; use more data or other fractions (split.train/val/test)")
    if groups is None:
        rest, drawn = train_test_split(ids, test_size=fraction, random_state=seed)
        return rest, drawn
    splitter = GroupShuffleSplit(1, test_size=fraction, random_state=seed)
    rest_index, drawn_index = next(splitter.split(ids, groups=groups))
    return ids.iloc[rest_index], ids.iloc[drawn_index]


def with_folders(cases: pd.DataFrame) -> pd.DataFrame:
    """The cases with a column `folder` (unless the manifest has its own): the first folder below the one all the
    images share (patient01 of patient01/scan2/frame_000.png); an image in that folder itself is a group of its own
    (its id)."""
    if "folder" in cases or cases.empty:
        return cases
    parents = cases["image_path"].map(lambda path: str(Path(path).parent))
    root = os.path.commonpath(parents.tolist())
    firsts = [(Path(os.path.relpath(parent, root)).parts or (None,))[0] for parent in parents]
    return cases.assign(folder=[first or str(case) for first, case in zip(firsts, cases["id"])])


def with_pattern_groups(cases: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """The cases with a column `pattern_group`: the part of each case id that the regular expression `pattern`
    (split.group_pattern) matches from its start, its first group when it has one (`^pat\\d+` or `(.+)_(pre|post)$`:
    pat03 of pat03_pre and pat03_post); ValueError naming the ids it does not match."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"split.group_pattern '{pattern}' is no regular expression: {error}") from None
    found = cases["id"].map(lambda case: match if (match := compiled.match(str(case))) and (
        match.group(1) if compiled.groups else match.group(0)) else None)
    if (missed := cases.loc[found.isna(), "id"].tolist()):
        raise ValueError(f"split.group_pattern '{pattern}' matches no (or an empty) part of {len(missed)} case id(s) "
                         f"from their start (e.g. {', '.join(map(str, missed[:5]))}); write it so that every id has "
                         f"its group")
    return cases.assign(pattern_group=found.map(lambda match: match.group(1) if compiled.groups else match.group(0)))


def group_column(cases: pd.DataFrame, group_by: str | None) -> str | None:
    """The column holding the groups: `group_by`, else 'group' when the manifest has it, else None."""
    if group_by is not None and group_by not in cases:
        raise ValueError(f"split.group_by: no column '{group_by}' in the manifest; 'folder' groups by each image's "
                         f"folder, and a column of a data.manifest of your own (e.g. patient) is kept for this (the "
                         f"manifest's columns: {list(cases.columns)})")
    return group_by or ("group" if "group" in cases else None)


def folder_leak_note(cases: pd.DataFrame, splits: pd.DataFrame) -> str | None:
    """Without split.group_by, for images in several folders and no groups of cases (a data.manifest's `group`):
    the folders whose cases landed in several splits (a folder per patient or slide would then be trained and tested
    on), and the fix; else None."""
    folders = with_folders(cases).set_index("id")["folder"]
    if folders.nunique() < 2 or ("group" in cases and (cases["group"] != cases["id"]).any()):
        return None
    sides = splits.assign(folder=splits["id"].map(folders)).groupby("folder")["split"].value_counts().unstack(
        fill_value=0)
    straddling = sides[(sides > 0).sum(axis=1) > 1]
    if straddling.empty:
        return None
    shown = "; ".join(f"{folder}: " + ", ".join(f"{name} {count}" for name, count in row.items() if count)
                      for folder, row in straddling.head(3).iterrows())
    return (f"the cases of {len(straddling)} of the {len(sides)} image folders are in several splits ({shown}"
            f"{'; ...' if len(straddling) > 3 else ''}): if a folder holds one patient (slide, animal, session), the "
            f"model is tested on what it trained on and its test scores are optimistic; set split.group_by: folder "
            f"to keep each folder's cases in one split")


NUMBERED = r"^(.*\D)\d+$"  # a case id ending in a number: what comes before it (eye00_bscan_ of eye00_bscan_003)


def name_leak_note(cases: pd.DataFrame, splits: pd.DataFrame) -> str | None:
    """Without groups of cases (a data.manifest's `group`): for case ids numbered after a shared name (eye00_bscan_000
    .. eye00_bscan_004), at least two such names of several cases, the names whose cases landed in several splits
    (the B-scans of one eye trained and tested on?), and the fix; else None."""
    if "group" in cases and (cases["group"] != cases["id"]).any():
        return None
    names = splits["id"].astype(str).str.extract(NUMBERED)[0]
    counts = names.value_counts()
    if (counts > 1).sum() < 2:
        return None
    sides = splits.groupby(names)["split"].nunique()
    straddling = sides[(sides > 1) & sides.index.isin(counts[counts > 1].index)]
    if straddling.empty:
        return None
    return (f"the cases of {len(straddling)} of the {int((counts > 1).sum())} names their ids number (e.g. "
            f"{', '.join(f'{name}*' for name in straddling.index[:3])}) are in several splits: if a name is one "
            f"patient (eye, slide, session), the model is tested on what it trained on and its test scores are "
            f"optimistic; set split.group_pattern: '{NUMBERED}' to keep each name's cases in one split"
            f"{'' if names.notna().all() else ' (every id must match it: write one that fits the others too)'}")


def check_fractions(train: float, val: float, test: float) -> None:
    """ValueError unless the fractions sum to 1 (for callers outside the workflow, whose config is checked before
    any job)."""
    if abs(train + val + test - 1) > 1e-6:
        raise ValueError(f"split.train + split.val + split.test must be 1, got {train} + {val} + {test}; fix "
                         f"split.train/val/test")


def check_not_empty(table: pd.DataFrame, required: tuple[str, ...], n_cases: int,
                    fix: str = "use more data or other fractions (split.train/val/test)") -> None:
    """ValueError naming the required splits that hold no case, and `fix`."""
    empty = [name for name in required if not (table["split"] == name).any()]
    if empty:
        raise ValueError(f"split: {n_cases} cases leave the {', '.join(empty)} split(s) empty; {fix}")


def assign_folds(pool: pd.DataFrame, folds: int, seed: int, groups: str | None, stratify_by: str | None) -> pd.Series:
    """Fold index (0..folds-1) of every case of the pool, groups kept within one fold."""
    group_ids = pool[groups] if groups else pool["id"]
    if group_ids.nunique() < folds:
        raise ValueError(f"split.folds: {folds} folds need at least {folds} groups but the train+val pool has "
                         f"{group_ids.nunique()} ({'column ' + repr(groups) if groups else 'cases'}); "
                         f"lower split.folds")
    if stratify_by is not None:
        if stratify_by not in pool:
            raise ValueError(f"split.stratify_by: no column '{stratify_by}' in the manifest")
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        parts = splitter.split(pool, pool[stratify_by].astype(str), groups=group_ids)
    else:
        parts = GroupKFold(folds, shuffle=True, random_state=seed).split(pool, groups=group_ids)
    fold = pd.Series(-1, index=pool.index)
    for index, (_, val_rows) in enumerate(parts):
        fold.iloc[val_rows] = index
    return fold


def fixed_split(cases: pd.DataFrame, groups: str | None = None) -> pd.DataFrame:
    """The split given in the manifest's `split` column (data.manifest), checked: every split but test holds a case,
    and no group (column `groups`) has cases on two sides."""
    if "split" not in cases:
        raise ValueError("split.fixed: the manifest has no 'split' column; give one in data.manifest")
    bad = cases.loc[~cases["split"].isin(SPLITS), "id"].tolist()
    if bad:
        raise ValueError(f"split.fixed: cases {bad[:5]} have no valid split (train, val or test) in data.manifest")
    table = cases[["id", "split"]].copy()
    check_not_empty(table, ("train", "val"), len(cases), "give some cases that split in data.manifest's split column")
    sides = cases.groupby(groups)["split"].unique() if groups else pd.Series(dtype=object)
    straddling = {group: sorted(splits) for group, splits in sides.items() if len(splits) > 1}
    if straddling:
        shown = "; ".join(f"{group}: {', '.join(splits)}" for group, splits in list(straddling.items())[:5])
        raise ValueError(f"split.fixed: {len(straddling)} group(s) of column '{groups}' have cases in several "
                         f"splits of data.manifest ({shown}{'; ...' if len(straddling) > 5 else ''}), so the model "
                         f"would be tested on the groups it trained on; give each group's cases one split")
    return table


def split_cases(cases: pd.DataFrame, train: float, val: float, test: float, seed: int = 0,
                group_by: str | None = None, folds: int = 1, fixed: bool = False,
                stratify_by: str | None = None, group_pattern: str | None = None) -> pd.DataFrame:
    """Table (id, split[, fold][, group]): test drawn first, then val (or K folds) from the rest; deterministic."""
    if group_pattern is not None:
        if group_by is not None:
            raise ValueError("split.group_by and split.group_pattern are both set: set one of them")
        cases, group_by = with_pattern_groups(cases, group_pattern), "pattern_group"
    cases = (with_folders(cases) if group_by == "folder" else cases).sort_values("id").reset_index(drop=True)
    if group_by == "folder" and (cases["folder"] == cases["id"].astype(str)).all():
        raise ValueError(f"split.group_by: folder, but all {len(cases)} images are in one folder: nothing to group "
                         f"by; group them with split.group_pattern (a regular expression on their names) or a "
                         f"data.manifest's group column")
    groups = group_column(cases, group_by)
    if fixed:
        table = fixed_split(cases, groups)
    else:
        check_fractions(train, val, test)
        rest, test_ids = draw(cases["id"], test, seed, cases[groups] if groups else None)
        if folds > 1:
            fold = assign_folds(cases.loc[rest.index], folds, seed, groups, stratify_by)
            table = pd.DataFrame({"id": cases["id"], "split": "test", "fold": -1})
            table.loc[fold.index, "fold"] = fold
            table.loc[fold.index, "split"] = fold.map(lambda f: "val" if f == 0 else "train")
        else:
            rest_groups = cases.loc[rest.index, groups] if groups else None
            train_ids, val_ids = draw(rest, val / (train + val), seed, rest_groups)
            table = pd.concat([pd.DataFrame({"id": ids, "split": name})
                               for name, ids in zip(SPLITS, (train_ids, val_ids, test_ids))])
        required = [name for name, fraction in zip(SPLITS, (train, val, test)) if fraction > 0]
        check_not_empty(table, tuple(required), len(cases))
    if groups:
        table[groups] = table["id"].map(cases.set_index("id")[groups])
    return table.sort_values("id").reset_index(drop=True)



def held_out_share_note(splits: pd.DataFrame, test: float, tolerance: float = 0.05) -> str | None:
    """What to say when the test split's share of the cases is further than `tolerance` from `split.test`'s."""
    share = float((splits["split"] == "test").mean())
    if abs(share - test) <= tolerance:
        return None
    return (f"the test split holds {share:.0%} of the {len(splits)} cases where split.test asks for {test:.0%}: a "
            f"share is rounded to whole cases, and to whole groups where cases are grouped")
