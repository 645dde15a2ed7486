"""The object probability of an instance package chosen on its validation images (`predict.object_probability:
auto`), as StarDist chooses its thresholds: the images of the `val` split are predicted once by the package's models,
their objects found at each of OBJECT_PROBABILITIES (`unetflow.instances.objects`), and the one whose objects score
the highest mean average precision against the masks (IoU 0.5 to 0.9, `unetflow.evaluate.object_metrics`, the mean
over the images' slices) is kept, the lowest among equals. With K folds, each fold's validation images are predicted
by that fold's models only (of every ensemble member), which never trained on them: the out-of-fold predictions on
which nnU-Net chooses its postprocessing too.
"""

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np
import pandas as pd

from unetflow.data.folds import fold_ids
from unetflow.evaluate.object_metrics import object_metrics
from unetflow.infer.package import Package, load_package, save_package
from unetflow.infer.predictor import Predictor
from unetflow.instances.objects import OBJECT_PROBABILITY, instances_from_probabilities
from unetflow.instances.targets import object_ids
from unetflow.io.sources import read_source_mask

OBJECT_PROBABILITIES = (0.5, 0.6, 0.7)


def predicted_cases(predictor: Predictor, sources: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(softmax (K, Z, Y, X), true object ids (Z, Y, X)) of each source, predicted through the package, one at a
    time."""
    for row in sources.to_dict("records"):
        yield predictor.source_probabilities(row), object_ids(read_source_mask(row, ids=True))


def fold_predictors(package: Package, device: str) -> dict[int, Predictor]:
    """{fold: a predictor of the package's models trained on that fold}, by each model's source
    (`<experiment>/fold<k>`)."""
    models = {}
    for model in package.models:
        models.setdefault(int(re.fullmatch(r".*fold(\d+)", model["source"]).group(1)), []).append(model)
    return {fold: Predictor(replace(package, models=members), device) for fold, members in sorted(models.items())}


def fold_validation_sources(folds: Iterable[int], splits: pd.DataFrame,
                            manifest: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """{fold: the manifest rows of its validation sources (the `val` split without folds)}."""
    return {fold: manifest[manifest["id"].isin(fold_ids(splits, fold)[1])] for fold in folds}


def out_of_fold_cases(predictors: dict[int, Predictor],
                      sources: dict[int, pd.DataFrame]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`predicted_cases` of each fold's validation `sources` through that fold's predictor."""
    return itertools.chain.from_iterable(predicted_cases(predictors[fold], rows) for fold, rows in sources.items())


def object_probability_scores(cases: Iterable[tuple[np.ndarray, np.ndarray]], target: str,
                              min_size: int) -> dict[float, float]:
    """{object probability: the mean over the cases' slices of its objects' mAP} for OBJECT_PROBABILITIES; empty
    without cases."""
    scores = {probability: [] for probability in OBJECT_PROBABILITIES}
    for probs, truth in cases:
        for index, true_ids in enumerate(truth.astype(np.int64)):
            for probability, found in scores.items():
                objects = instances_from_probabilities(probs[:, index], target, min_size, probability)
                found.append(object_metrics(true_ids, objects)["object_map"])
    return {probability: float(np.mean(found)) for probability, found in scores.items() if found}


def chosen_object_probability(scores: dict[float, float]) -> tuple[float, str]:
    """The object probability of the highest score (the lowest among equals) and why; OBJECT_PROBABILITY without
    scores."""
    if not scores:
        return OBJECT_PROBABILITY, "no validation images to choose on"
    best = max(scores, key=lambda probability: (scores[probability], -probability))
    listed = ", ".join(f"{probability:g}: {score:.4f}" for probability, score in scores.items())
    return best, f"the highest mAP of the validation images' objects ({listed})"


def choose_object_probability(path: str, package: dict, splits: pd.DataFrame, manifest: pd.DataFrame,
                              device: str) -> str:
    """Choose the object probability of the instance package saved at `path` from its dict `package` on each fold's
    validation sources (ids of the split table `splits`, rows of `manifest`), predicted out of fold on `device`; the
    package saved again with it; why it was chosen."""
    loaded = load_package(path)
    predictors = fold_predictors(loaded, device)
    sources = fold_validation_sources(predictors, splits, manifest)
    scores = object_probability_scores(out_of_fold_cases(predictors, sources), loaded.instance_target,
                                       package["predict"]["min_object_size"])
    package["predict"]["object_probability"], reason = chosen_object_probability(scores)
    save_package(package, path)
    images = sum(len(rows) for rows in sources.values())
    folds = f" of {len(predictors)} folds, each predicted by its fold's models" if len(predictors) > 1 else ""
    return (f"{package['predict']['object_probability']:g}: {reason}, on {images} validation image(s){folds}, on "
            f"{next(iter(predictors.values())).device}")
