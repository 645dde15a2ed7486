"""The images `infer` names to check first: those without predicted foreground, then the least confident."""

import pandas as pd

from unetflow.infer.summary import check_first, small_objects_note


def test_images_without_foreground_come_first_then_the_least_confident():
    summary = pd.DataFrame({"id": ["a", "a", "b", "b", "c", "c", "d", "d"], "class": [0, 1] * 4,
                            "confidence": [0.99, 0.91, 0.98, float("nan"), 0.97, 0.62, 0.99, 0.88]})
    assert check_first(summary) == ["b  no foreground predicted", "c  0.6200", "d  0.8800", "a  0.9100"]
    assert check_first(summary, count=2) == ["b  no foreground predicted", "c  0.6200"]
    objects = summary.assign(objects=[0, 1, 0, 0, 0, 2, 0, 1])  # an instance package's
    assert check_first(objects)[0] == "b  no object kept (none found, or all under predict.min_object_size)"
    counted = objects.assign(small_objects=[0, 0, 41, 41, 0, 0, 0, 0])
    assert check_first(counted)[0] == "b  no object kept (41 found, all under predict.min_object_size)"
    assert check_first(counted.assign(small_objects=0))[0] == "b  no object kept (none found)"


def test_a_large_share_of_objects_under_the_smallest_size_is_named():
    summary = pd.DataFrame({"id": ["a", "a", "b", "b", "c", "c"], "class": [0, 1] * 3,
                            "objects": [20, 20, 2, 2, 10, 10], "small_objects": [1, 1, 30, 30, 0, 0]})
    note = small_objects_note(summary, 25)
    assert note.startswith("31 of the 63 objects found (49 %) were under the package's predict.min_object_size "
                           "(25 px) and dropped") and note.split(", most in ")[1].startswith("b (30), a (1): if these")
    assert "predict.min_object_size and dropped" in small_objects_note(summary)
    assert small_objects_note(summary.assign(small_objects=[1, 1, 5, 5, 0, 0])) == ""  # 6 of 38: a few specks
    assert small_objects_note(summary.assign(objects=[2, 2, 1, 1, 0, 0], small_objects=[3, 3, 4, 4, 0, 0])) == ""
    assert small_objects_note(summary.drop(columns=["objects", "small_objects"])) == ""  # a class package's
