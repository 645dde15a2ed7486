"""The object probability an instance package chooses on its validation images."""

import numpy as np
import pandas as pd
import pytest
from test_infer import make_package

from unetflow.infer.object_probability import (
    OBJECT_PROBABILITIES,
    chosen_object_probability,
    fold_predictors,
    fold_validation_sources,
    object_probability_scores,
    out_of_fold_cases,
)
from unetflow.infer.package import load_package
from unetflow.infer.predictor import Predictor
from unetflow.instances.objects import OBJECT_PROBABILITY
from unetflow.instances.targets import instance_classes


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


def test_each_fold_validation_image_is_predicted_by_the_models_of_its_fold_only(tmp_path, monkeypatch):
    package = load_package(make_package(tmp_path, members=2, classes=instance_classes()))  # m/fold0, m/fold1
    predictors = fold_predictors(package, "cpu")
    assert {fold: [m["source"] for m in p.package.models] for fold, p in predictors.items()} == {
        0: ["m/fold0"], 1: ["m/fold1"]}
    image = np.random.default_rng(0).random((1, 1, 40, 48)).astype(np.float32)
    both, alone = Predictor(package, "cpu"), [predictors[fold].image_probabilities(image) for fold in (0, 1)]
    assert np.abs(alone[0] - alone[1]).max() > 1e-3  # two different networks ...
    assert both.image_probabilities(image) == pytest.approx((alone[0] + alone[1]) / 2, abs=1e-5)  # ... averaged

    splits = pd.DataFrame({"id": ["a", "b", "c", "t"], "split": ["val", "train", "train", "test"],
                           "fold": [0, 1, 1, -1]})
    manifest = pd.DataFrame({"id": ["a", "b", "c", "t"]})
    monkeypatch.setattr("unetflow.infer.object_probability.predicted_cases",
                        lambda predictor, sources: [(predictor.package.models[0]["source"], i) for i in sources["id"]])
    sources = fold_validation_sources(predictors, splits, manifest)
    assert list(out_of_fold_cases(predictors, sources)) == [("m/fold0", "a"), ("m/fold1", "b"), ("m/fold1", "c")]
