"""Seeded splits: deterministic, complete, disjoint, group-aware."""

import pandas as pd
import pytest

from unetflow.split import ids_in, split_cases


def cases(n=20, groups=None):
    table = pd.DataFrame({"id": [f"c{i:02d}" for i in range(n)]})
    if groups:
        table["group"] = [f"g{i % groups}" for i in range(n)]
    return table


def test_same_seed_same_split_and_other_seed_differs():
    first = split_cases(cases(), 0.6, 0.2, 0.2, seed=3)
    assert first.equals(split_cases(cases().sample(frac=1, random_state=1), 0.6, 0.2, 0.2, seed=3))
    assert not first.equals(split_cases(cases(), 0.6, 0.2, 0.2, seed=4))


def test_every_case_once_with_requested_sizes():
    table = split_cases(cases(), 0.6, 0.2, 0.2)
    assert sorted(table["id"]) == sorted(cases()["id"])
    assert table["split"].value_counts().to_dict() == {"train": 12, "val": 4, "test": 4}


def test_groups_stay_on_one_side():
    table = split_cases(cases(30, groups=6), 0.5, 0.25, 0.25, group_by="group")
    assert (table.groupby("group")["split"].nunique() == 1).all()


def test_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="must be 1"):
        split_cases(cases(), 0.5, 0.2, 0.2)


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        split_cases(cases(3, groups=1), 0.5, 0.25, 0.25, group_by="group")


def test_ids_in_all():
    table = split_cases(cases(), 0.6, 0.2, 0.2)
    assert len(ids_in(table, "all")) == 20 and len(ids_in(table, "val")) == 4
