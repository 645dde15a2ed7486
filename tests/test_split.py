"""Seeded splits: deterministic, complete, disjoint, group-aware."""

import cv2
import pandas as pd
import pytest

from conftest import snakemake, tiny_config, write_config, write_pairs
from unetflow.data.folds import ids_in
from unetflow.data.split import NUMBERED, folder_leak_note, held_out_share_note, name_leak_note, split_cases


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


def slices(n_volumes=8, per_volume=3):
    return pd.DataFrame({"id": [f"v{v}_z{s}" for v in range(n_volumes) for s in range(per_volume)],
                         "group": [f"v{v}" for v in range(n_volumes) for _ in range(per_volume)],
                         "big": [v % 2 for v in range(n_volumes) for _ in range(per_volume)]})


def test_slices_of_a_volume_stay_together_without_group_by():
    table = split_cases(slices(), 0.5, 0.25, 0.25)
    assert (table.groupby("group")["split"].nunique() == 1).all()


@pytest.mark.parametrize("stratify_by", [None, "big"])
def test_k_folds_are_group_disjoint_and_cover_the_pool(stratify_by):
    table = split_cases(slices(10), 0.8, 0.0, 0.2, folds=4, stratify_by=stratify_by)
    pool = table[table["split"] != "test"]
    assert sorted(pool["fold"].unique()) == [0, 1, 2, 3] and (table.loc[table["split"] == "test", "fold"] == -1).all()
    assert (table.groupby("group")["fold"].nunique() == 1).all()
    assert (pool.loc[pool["fold"] == 0, "split"] == "val").all()
    assert (pool.loc[pool["fold"] > 0, "split"] == "train").all()


def test_fixed_split_is_taken_from_the_manifest():
    manifest = cases(6).assign(split=["train", "train", "val", "test", "train", "val"])
    assert split_cases(manifest, 0.7, 0.15, 0.15, fixed=True)["split"].tolist() == manifest["split"].tolist()


def test_a_fixed_split_that_puts_a_group_on_two_sides_or_leaves_val_empty_is_refused():
    manifest = cases(6, groups=3).assign(split=["train", "train", "val", "test", "train", "val"])  # g0: 0 and 3
    with pytest.raises(ValueError, match=r"1 group\(s\) of column 'group' have cases in several splits of "
                                         r"data.manifest \(g0: test, train\)"):
        split_cases(manifest, 0.7, 0.15, 0.15, fixed=True)
    manifest["split"] = ["train", "train", "test", "train", "train", "test"]
    with pytest.raises(ValueError, match=r"leave the val split\(s\) empty; give some cases that split in data"):
        split_cases(manifest, 0.7, 0.15, 0.15, fixed=True)


def test_a_manifest_split_unused_is_said_and_a_class_only_in_the_test_split_refused(tmp_path):
    images, masks = write_pairs(tmp_path, count=6, values=(0, 1))
    rare = cv2.imread(str(masks / "c5.png"), cv2.IMREAD_UNCHANGED)
    rare[:4, :4] = 2
    cv2.imwrite(str(masks / "c5.png"), rare)  # class 'rare' only in c5, which the manifest puts in the test split
    splits = ["train", "train", "train", "val", "test", "test"]
    pd.DataFrame({"image": [f"images/c{i}.png" for i in range(6)], "mask": [f"masks/c{i}.png" for i in range(6)],
                  "split": splits}).to_csv(tmp_path / "cases.csv", index=False)
    config = tiny_config()
    config.pop("demo")
    config["data"] = {"manifest": "cases.csv", "classes": {"background": 0, "cell": 1, "rare": 2}}
    snakemake(tmp_path, "--until", "split", configfile=write_config(tmp_path, config))
    assert "split column, which this split does not use" in (tmp_path / "results/logs/split.log").read_text()
    config["split"] = {"fixed": True}
    refused = snakemake(tmp_path, "--until", "plan", configfile=write_config(tmp_path, config), check=False)
    assert refused.returncode != 0
    assert "split column" not in (tmp_path / "results/logs/split.log").read_text()
    plan_log = next((tmp_path / "results/logs").rglob("plan.log")).read_text()
    assert "PlanError: class(es) ['rare'] have no pixel in the training cases, only in c5 (test): the network " \
           "cannot learn them" in plan_log
    assert "Traceback" not in plan_log


def test_a_test_share_far_from_the_asked_one_is_said():
    cases = pd.DataFrame({"id": [f"c{i}" for i in range(23)], "group": [f"g{i // 3}" for i in range(23)]})
    grouped = split_cases(cases, 0.85, 0.0, 0.15, folds=3)  # 8 groups of (up to) 3: the test share jumps by 3 cases
    share = (grouped["split"] == "test").mean()
    assert held_out_share_note(grouped, 0.15) == (
        f"the test split holds {share:.0%} of the 23 cases where split.test asks for 15%: a share is rounded to whole "
        "cases, and to whole groups where cases are grouped")
    assert held_out_share_note(split_cases(cases.drop(columns="group"), 0.85, 0.0, 0.15, folds=3), 0.15) is None


def patient_frames(n_patients=6, frames=5):
    """Cases of patientNN/frame_K.png (ids as ingest names repeated stems), each its own group."""
    ids = [f"patient{p:02d}_frame_{k}" for p in range(n_patients) for k in range(frames)]
    return pd.DataFrame({"id": ids, "group": ids, "image_path": [f"/data/images/{i[:9]}/{i[10:]}.png" for i in ids]})


def test_frames_of_a_folder_split_apart_are_named_and_group_by_folder_keeps_them_together():
    table = patient_frames()
    splits = split_cases(table, 0.6, 0.2, 0.2)
    note = folder_leak_note(table, splits)
    assert note.startswith("the cases of ") and " of the 6 image folders are in several splits (patient0" in note
    assert note.endswith("set split.group_by: folder to keep each folder's cases in one split")
    grouped = split_cases(table, 0.6, 0.2, 0.2, group_by="folder")
    assert (grouped.groupby("folder")["split"].nunique() == 1).all() and grouped["folder"].nunique() == 6
    assert folder_leak_note(table, grouped) is None
    assert folder_leak_note(table.assign(group=table["id"].str[:9]), splits) is None  # a data.manifest's groups
    flat = table.assign(image_path=table["id"].map(lambda name: f"/data/images/{name}.png"))
    assert folder_leak_note(flat, splits) is None
    with pytest.raises(ValueError, match="no column 'patient' in the manifest; 'folder' groups by each image's folder"):
        split_cases(table, 0.6, 0.2, 0.2, group_by="patient")


def test_a_group_pattern_keeps_the_scans_of_one_patient_in_one_split():
    ids = [f"pat{p:02d}_{scan}" for p in range(8) for scan in ("pre", "post")]
    table = pd.DataFrame({"id": ids})
    for pattern in (r"^pat\d+", r"(.+)_(pre|post)$"):
        splits = split_cases(table, 0.5, 0.25, 0.25, group_pattern=pattern)
        assert splits["pattern_group"].nunique() == 8
        assert (splits.groupby("pattern_group")["split"].nunique() == 1).all()
    with pytest.raises(ValueError, match=r"matches no \(or an empty\) part of 1 case id\(s\) from their start \(e.g. "
                                         r"other\)"):
        split_cases(pd.DataFrame({"id": [*ids, "other"]}), 0.5, 0.25, 0.25, group_pattern=r"pat\d+")
    with pytest.raises(ValueError, match=r"matches no \(or an empty\) part of 16 case id"):
        split_cases(table, 0.5, 0.25, 0.25, group_pattern="(x)?")
    with pytest.raises(ValueError, match="is no regular expression"):
        split_cases(table, 0.5, 0.25, 0.25, group_pattern="pat(")
    with pytest.raises(ValueError, match="set one of them"):
        split_cases(table, 0.5, 0.25, 0.25, group_by="group", group_pattern=r"pat\d+")


def test_group_by_folder_takes_the_first_folder_below_the_shared_one_and_needs_several():
    table = patient_frames(4, 4).assign(image_path=lambda t: [path.replace("/frame", f"/scan{k % 2}/frame")
                                                             for k, path in enumerate(t["image_path"])])
    grouped = split_cases(table, 0.5, 0.25, 0.25, group_by="folder")
    assert sorted(grouped["folder"].unique()) == [f"patient{p:02d}" for p in range(4)]
    assert (grouped.groupby("folder")["split"].nunique() == 1).all()
    flat = table.assign(image_path=table["id"].map(lambda name: f"/data/images/{name}.png"))
    with pytest.raises(ValueError, match="all 16 images are in one folder: nothing to group by"):
        split_cases(flat, 0.5, 0.25, 0.25, group_by="folder")
    loose = pd.concat([table, flat.head(2).assign(id=["loose_a", "loose_b"], image_path=["/data/images/a.png",
                                                                                         "/data/images/b.png"])])
    folders = split_cases(loose, 0.5, 0.25, 0.25, group_by="folder").set_index("id")["folder"]
    assert folders[["loose_a", "loose_b"]].tolist() == ["loose_a", "loose_b"]  # images beside the folders: their own


def test_numbered_cases_of_one_name_split_apart_are_named_and_the_pattern_keeps_them_together():
    cases = pd.DataFrame({"id": [f"eye{e:02d}_bscan_{k:03d}" for e in range(8) for k in range(5)]})
    splits = split_cases(cases, 0.6, 0.2, 0.2)
    note = name_leak_note(cases, splits)
    assert note.startswith("the cases of ") and " of the 8 names their ids number (e.g. eye0" in note
    assert note.endswith(r"set split.group_pattern: '^(.*\D)\d+$' to keep each name's cases in one split")
    grouped = split_cases(cases, 0.6, 0.2, 0.2, group_pattern=NUMBERED)
    assert (grouped.groupby("pattern_group")["split"].nunique() == 1).all() and name_leak_note(cases, grouped) is None
    assert name_leak_note(cases.assign(group=cases["id"].str[:5]), splits) is None  # a data.manifest's groups
    mixed = pd.concat([cases, pd.DataFrame({"id": ["control_left"]})])
    assert name_leak_note(mixed, split_cases(mixed, 0.6, 0.2, 0.2)).endswith(
        "(every id must match it: write one that fits the others too)")
    hippocampus = pd.DataFrame({"id": [f"hippocampus_{k:03d}" for k in range(20)]})
    assert name_leak_note(hippocampus, split_cases(hippocampus, 0.6, 0.2, 0.2)) is None  # one name: nothing to tell
