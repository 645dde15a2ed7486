"""The star-convex probe (bench/star_convex_train.py): ray distances that flips and quarter turns permute exactly,
non-maximum suppression that gives back touching objects from their true distances, and the probe end to end on a
tiny generated instance run."""

import numpy as np
from skimage.draw import disk, ellipse

from conftest import bench_module
from unetflow.evaluate.object_metrics import object_metrics

star = bench_module("star_convex_train")


def ellipses(shape=(64, 80), count: int = 7, seed: int = 0) -> np.ndarray:
    """An id map of `count` random ellipses, later ones over earlier ones."""
    rng = np.random.default_rng(seed)
    ids = np.zeros(shape, np.int64)
    for index in range(1, count + 1):
        rows, cols = ellipse(rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10), rng.integers(4, 12),
                             rng.integers(4, 12), shape=shape, rotation=rng.uniform(0, np.pi))
        ids[rows, cols] = index
    return ids


def test_the_distances_of_a_disc_are_its_radius_and_flips_and_turns_permute_the_rays():
    ids = np.zeros((41, 41), np.int64)
    ids[disk((20, 20), 10.5)] = 1
    distances = star.star_distances(ids)
    assert distances.shape == (star.RAYS, 41, 41) and not distances[:, ids == 0].any()
    assert np.all(np.abs(distances[:, 20, 20] - 11) <= 1)  # the first pixel outside, in 1-px steps
    probability = star.object_probability(ids)
    assert probability[20, 20] == 1 and probability[20, 10] < 0.1 and not probability[ids == 0].any()
    ids = ellipses()
    distances, image = star.star_distances(ids), ids[None].astype(np.float32)
    for axis in (0, 1):
        moved, moved_distances = star.flipped(image, distances, axis)
        np.testing.assert_array_equal(star.star_distances(np.ascontiguousarray(moved[0]).astype(np.int64)),
                                      moved_distances)
    for quarters in (1, 2, 3):
        moved, moved_distances = star.turned(image, distances, quarters)
        np.testing.assert_array_equal(star.star_distances(np.ascontiguousarray(moved[0]).astype(np.int64)),
                                      moved_distances)


def test_suppression_gives_back_touching_objects_from_their_true_distances():
    ids = np.zeros((48, 64), np.int64)
    for index, centre in enumerate([(24, 14), (24, 32), (24, 50)], start=1):  # three discs in a touching row
        ids[disk(centre, 9.5, shape=ids.shape)] = index
    probability = np.where(ids > 0, 0.99, 0.01).astype(np.float32)
    found = star.star_objects(probability, star.star_distances(ids), 0.5, 0.4)
    scores = object_metrics(ids, found)
    assert (scores["object_tp"], scores["object_fp"], scores["object_fn"]) == (3, 0, 0)
    merged = star.star_objects(probability, star.star_distances((ids > 0).astype(np.int64)), 0.5, 0.4)
    assert object_metrics(ids, merged)["object_tp"] < 3  # distances of one blob draw no three discs
