"""The leaderboard reads each experiment's U-Net (dims, patch size, parameters) from its plan (<experiment>/plan.json,
which the plan rule writes with the parameter count of the U-Net it planned), and ranks experiments by the mean test
Dice of the foreground classes: class 0 among them when it is not a dominant background; in the instance mode by the
mean object mAP."""

import json

import pandas as pd
import pytest

from unetflow.evaluate.leaderboard import empty_case_notes, leaderboard, model_traits


def write_plan(path, class_shares) -> str:
    settings = {"dims": {"value": 3}, "resolution": {"value": 1.0}, "patch_size": {"value": [14, 24, 20]},
                "depth": {"value": 4}}
    path.write_text(json.dumps({"device": "cpu", "parameters": 1234, "settings": settings,
                                "traits": {"class_shares": class_shares}}))
    return str(path)


def test_model_traits_come_from_the_plan(tmp_path):
    assert model_traits(write_plan(tmp_path / "plan.json", [0.9, 0.1])) == {
        "dims": 3, "resolution": 1.0, "patch_size": "14x24x20", "depth": 4, "parameters": 1234, "started_from": None,
        "first_ranked": 1}


def write_experiments(tmp_path, dice: dict, class_shares, **columns) -> dict:
    """Experiments of two classes, each with its summary (test Dice per class, other columns as given), one fold's
    metrics and its plan."""
    experiments = {}
    for name, values in dice.items():
        summary = pd.DataFrame({"class": [0, 1], "class_name": ["zero", "one"], "n_cases": 3, "dice_mean": values,
                                "dice_median": values, "dice_std": 0.0, "iou_mean": values, "iou_std": 0.0,
                                **{column: given[name] for column, given in columns.items()}})
        summary.to_parquet(tmp_path / f"{name}_summary.parquet")
        metrics = pd.DataFrame({"val_dice": [0.5], "seconds": [1.0], "steps": [30]})
        metrics.to_parquet(tmp_path / f"{name}_metrics.parquet")
        experiments[name] = {"summary": tmp_path / f"{name}_summary.parquet", "plans": [write_plan(
            tmp_path / f"{name}_plan.json", class_shares)], "metrics": [tmp_path / f"{name}_metrics.parquet"]}
    return experiments


@pytest.mark.parametrize("class_shares, winner", [([0.9, 0.1], "a"), ([0.22, 0.78], "b")])
def test_class_0_counts_in_the_rank_when_it_is_not_a_dominant_background(tmp_path, class_shares, winner):
    """a is better on class 1, b on class 0 (ISBI 2012's membranes, stored as 0, are 22 % of the pixels)."""
    table = leaderboard(write_experiments(tmp_path, {"a": [0.70, 0.95], "b": [0.80, 0.94]}, class_shares))
    assert table["experiment"].iloc[0] == winner and set(table["rank_by"]) == {"dice"}
    assert table["ranked"].tolist() == [class_shares[0] < 0.5, True] * 2


def test_instance_experiments_are_ranked_by_object_map_and_show_the_object_metrics(tmp_path):
    """a has the better pixel Dice of the objects, b found them one by one (touching ones apart)."""
    objects = {f"{metric}_mean": {"a": [None, 0.6], "b": [None, 0.8]} for metric in ("object_f1", "object_map",
                                                                                      "aji", "pq")}
    table = leaderboard(write_experiments(tmp_path, {"a": [0.99, 0.95], "b": [0.99, 0.93]}, [0.9, 0.1], **objects))
    assert table["experiment"].tolist() == ["b", "b", "a", "a"] and set(table["rank_by"]) == {"object_map"}
    assert table.loc[table["class"] == 1, "pq_mean"].tolist() == [0.8, 0.6]


def test_stray_predictions_on_test_cases_without_the_class_are_counted_and_said(tmp_path):
    """b's mean is pulled down by one test case without class 1 in which it predicted a few pixels of it; c uses a's
    models (the same train section), largest components kept."""
    experiments = write_experiments(tmp_path, {"a": [0.99, 0.95], "b": [0.99, 0.92], "c": [0.99, 0.96]}, [0.9, 0.1],
                                    empty_false_positives={"a": [0, 0], "b": [0, 1], "c": [0, 0]})
    table = leaderboard({**experiments, "c": {**experiments["c"], "trained_by": "a"}})
    assert table.loc[table["class"] == 1, "empty_false_positives"].tolist() == [0, 0, 1]  # c, a, b
    assert table.drop_duplicates("experiment")["trained_by"].tolist() == ["a", "a", "b"]
    assert empty_case_notes(table) == [
        "b, class 'one': 1 of 3 test unit(s) lack it in the ground truth but have it in the prediction, each scoring "
        "Dice 0 (mean 0.9200, median 0.9200)"]


def test_an_ensemble_counts_the_training_and_parameters_of_every_member(tmp_path):
    """ens predicts with a's two models and b's one: their steps, time and parameters, and all three names."""
    experiments = write_experiments(tmp_path, {"a": [0.99, 0.95], "b": [0.99, 0.93], "ens": [0.99, 0.96]}, [0.9, 0.1])
    ensemble = {**experiments["ens"], "metrics": [*experiments["a"]["metrics"] * 2, *experiments["b"]["metrics"]],
                "plans": [experiments["a"]["plans"][0], experiments["b"]["plans"][0]], "trained_by": "a+b"}
    table = leaderboard({**experiments, "ens": ensemble}).drop_duplicates("experiment").set_index("experiment")
    assert table.loc["ens", ["trained_by", "models", "train_steps", "train_seconds", "parameters"]].tolist() == [
        "a+b", 3, 90, 3.0, 2468]
    assert table.loc["a", ["models", "train_steps", "parameters"]].tolist() == [1, 30, 1234]


def test_a_class_predicted_in_no_unit_that_holds_it_is_said_beside_its_mean(tmp_path):
    """Fluid in 3 of 10 test units, never predicted: a mean Dice of 0.7 from the 7 units without it in either."""
    experiments = write_experiments(tmp_path, {"a": [0.99, 0.70]}, [0.9, 0.1], n_cases={"a": [10, 10]},
                                    held_units={"a": [10, 3]}, missed_units={"a": [0, 3]})
    table = leaderboard(experiments)
    assert table.loc[table["class"] == 1, ["held_units", "missed_units"]].values.tolist() == [[3, 3]]
    assert empty_case_notes(table) == [
        "a, class 'one': found in none of the 3 test unit(s) that hold it; its mean Dice 0.7000 comes from the units "
        "without it in the ground truth (7)"]
