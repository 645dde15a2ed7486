"""The images `infer` names to check first: those without predicted foreground, then the least confident."""

import pandas as pd

from unetflow.infer.summary import check_first


def test_images_without_foreground_come_first_then_the_least_confident():
    summary = pd.DataFrame({"id": ["a", "a", "b", "b", "c", "c", "d", "d"], "class": [0, 1] * 4,
                            "confidence": [0.99, 0.91, 0.98, float("nan"), 0.97, 0.62, 0.99, 0.88]})
    assert check_first(summary) == ["b  no foreground predicted", "c  0.6200", "d  0.8800", "a  0.9100"]
    assert check_first(summary, count=2) == ["b  no foreground predicted", "c  0.6200"]
    objects = summary.assign(objects=[0, 1, 0, 0, 0, 2, 0, 1])  # an instance package's
    assert check_first(objects)[0] == "b  no object kept (none found, or all under predict.min_object_size)"
