"""The object probability an instance package chooses on its validation images."""

import numpy as np

from unetflow.infer.object_probability import (
    OBJECT_PROBABILITIES,
    chosen_object_probability,
    object_probability_scores,
)
from unetflow.instances.objects import OBJECT_PROBABILITY


def two_objects(gap_background: float) -> tuple[np.ndarray, np.ndarray]:
    """The softmax (2, 1, H, W) of two 20 x 15 px objects apart by a one-pixel gap whose background probability is
    `gap_background`, and their true ids (1, H, W)."""
    ids = np.zeros((30, 41), np.uint16)
    ids[5:25, 5:20], ids[5:25, 21:36] = 1, 2
    background = np.where(ids > 0, 0.05, 0.95).astype(np.float32)
    background[5:25, 20] = gap_background
    return np.stack([background, 1 - background])[:, None], ids[None]


def test_a_gap_found_only_in_part_makes_the_package_choose_a_higher_object_probability():
    probs, ids = two_objects(gap_background=0.35)  # the network leans to foreground in the gap, unsure
    scores = object_probability_scores([(probs, ids)], "weight_map", min_size=1)
    assert list(scores) == list(OBJECT_PROBABILITIES)
    chosen, reason = chosen_object_probability(scores)
    assert chosen == 0.7 and scores[0.7] > scores[0.5] and "mAP" in reason  # 0.5 and 0.6 merge the two


def test_clear_objects_keep_the_default_and_no_validation_images_too():
    probs, ids = two_objects(gap_background=0.95)
    scores = object_probability_scores([(probs, ids)], "weight_map", min_size=1)
    assert len(set(scores.values())) == 1 and chosen_object_probability(scores)[0] == OBJECT_PROBABILITY  # a tie
    assert object_probability_scores([], "weight_map", 1) == {}
    assert chosen_object_probability({}) == (OBJECT_PROBABILITY, "no validation images to choose on")
