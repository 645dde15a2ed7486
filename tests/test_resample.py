"""Resampling to a voxel spacing: grid shapes, labels without new classes, round trips that keep labels and header,
and predicted probabilities brought back onto the input's grid."""

import numpy as np

from conftest import write_ct_pair
from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.nifti import read_volume, write_label_volume
from unetflow.io.resample import (
    resample_image,
    resample_labels,
    resample_nearest,
    resample_probabilities,
    resample_source_labels,
    resampled_shape,
    resize_image,
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_shapes_follow_the_spacing_and_keep_one_voxel_axes():
    assert resampled_shape((100, 80, 1), (0.8, 0.8, 3.0), (1.0, 0.5, 1.0)) == (80, 128, 1)
    assert resampled_shape((10, 10, 10), (1, 1, 1), (None, 2, 1)) == (10, 5, 10)


def test_label_round_trip_of_an_anisotropic_rotated_volume_keeps_labels_and_header(tmp_path):
    """0.8 x 0.8 x 3 mm, rotated 30 degrees: resampled to 0.5 x 0.5 x 1 mm and back, the ellipsoid survives, no
    class value appears, and the labels written with the input's header carry its affine."""
    labels, affine = write_ct_pair(tmp_path, "scan", (40, 36, 8), (0.8, 0.8, 3.0), degrees=30)
    labels = labels + (labels > 0) * np.arange(labels.shape[0])[:, None, None] % 2  # classes 1 and 2, halves
    fine = resampled_shape(labels.shape, (0.8, 0.8, 3.0), (0.5, 0.5, 1.0))
    there = resample_labels(labels, fine)
    back = resample_labels(there, labels.shape)
    assert there.shape == (64, 58, 24) and back.shape == labels.shape
    assert set(np.unique(there)) == set(np.unique(back)) == {0, 1, 2}
    assert dice(back > 0, labels > 0) > 0.97 and (back == labels).mean() > 0.99
    write_label_volume(tmp_path / "back.nii.gz", back, tmp_path / "images" / "scan.nii.gz")
    written, image = read_volume(tmp_path / "back.nii.gz")
    assert np.array_equal(written, back) and np.allclose(image.affine, affine)


def test_labels_never_take_values_they_did_not_have():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 3, IGNORE_INDEX], np.uint8), (30, 30))  # speckle: every voxel a border
    assert set(np.unique(resample_labels(labels, (47, 13)))) <= {0, 3, IGNORE_INDEX}


def test_images_are_resampled_by_cubic_spline_per_channel():
    y, x = np.mgrid[0:40, 0:50] / 10.0
    image = np.stack([np.sin(y) + np.cos(x), 2 * np.cos(y)]).astype(np.float32)
    up = resample_image(image, (80, 100))
    back = resample_image(up, (40, 50))
    assert up.shape == (2, 80, 100) and up.dtype == np.float32
    np.testing.assert_allclose(back, image, atol=0.02)  # a smooth image survives the round trip


def test_probabilities_go_back_to_the_files_grid_before_the_argmax(tmp_path):
    """The one-hot map of a volume resampled in-plane and along its slices (as preprocessing stores it), brought
    back as the predictor brings its softmax back, sums to 1 and argmaxes to the original labels."""
    labels, _ = write_ct_pair(tmp_path, "scan", (40, 36, 6), (0.8, 0.8, 3.0))
    labels = np.moveaxis(labels, 2, 0)  # array order: (6, 40, 36), spacing (3.0, 0.8, 0.8)
    stored = resample_source_labels(labels, resampled_shape(labels.shape, (3.0, 0.8, 0.8), (2.0, 1.1, 1.1)))
    assert stored.shape == (9, 29, 26)
    one_hot = np.stack([stored == 0, stored == 1]).astype(np.float32)
    back = resample_probabilities(one_hot, labels.shape)
    assert back.shape == (2, 6, 40, 36)
    np.testing.assert_allclose(back.sum(0), np.ones(labels.shape), atol=1e-5)
    assert dice(back.argmax(0) == 1, labels == 1) > 0.95


def test_small_objects_survive_the_slice_axis_round_trip_of_3d_training_and_prediction():
    """Objects of 1-2 slices x 2-3 x 2-3 voxels in 3 mm slices: labels resampled along the slice axis to 1.25 mm
    (as 3D training stacks a volume), predicted perfectly there (their one-hot map) and the probabilities brought
    back to the 3 mm slices (as 3D prediction returns them) give every object back."""
    rng = np.random.default_rng(0)
    labels = np.zeros((10, 24, 24), np.uint8)  # (S, H, W), slice axis first
    boxes = []
    for index, (s, y, x) in enumerate(np.ndindex(3, 4, 4)):
        depth, height, width = rng.integers(1, 3), rng.integers(2, 4), rng.integers(2, 4)
        box = np.s_[3 * s + 1:3 * s + 1 + depth, 6 * y + 1:6 * y + 1 + height, 6 * x + 1:6 * x + 1 + width]
        labels[box], boxes = 1 + index % 2, boxes + [box]
    fine = resample_labels(labels, resampled_shape(labels.shape, (3.0, 1.0, 1.0), (1.25, 1.0, 1.0)))
    assert fine.shape == (24, 24, 24) and set(np.unique(fine)) == {0, 1, 2}
    one_hot = np.stack([fine == value for value in range(3)]).astype(np.float32)
    back = resample_probabilities(one_hot, labels.shape).argmax(0)
    for box in boxes:
        value = labels[box].max()
        assert dice(back[box] == value, labels[box] == value) == 1.0
    assert dice(back > 0, labels > 0) > 0.99


def test_probabilities_of_2d_files_come_back_to_their_size_and_are_untouched_at_it():
    rng = np.random.default_rng(0)
    probabilities = rng.random((2, 1, 30, 20)).astype(np.float32)  # (K, Z, Y, X) of a 2D file
    assert resample_probabilities(probabilities, (1, 30, 20)) is probabilities
    scaled = rng.random((2, 1, 15, 10)).astype(np.float32)
    scaled /= scaled.sum(0)
    back = resample_probabilities(scaled, (1, 30, 20))
    assert back.shape == (2, 1, 30, 20) and np.allclose(back.sum(0), 1, atol=1e-5)


def test_shrinking_2d_labels_takes_each_area_s_largest_share():
    labels = np.zeros((8, 8), np.uint8)
    labels[:, :3] = 2  # columns 0-2: a 2x2 block over columns 2-3 holds 2 of class 2 and 2 of class 0 -> tie
    labels[:, 6:] = 1
    small = resample_labels(labels, (4, 4))
    assert set(np.unique(small)) <= {0, 1, 2}
    assert (small[:, 0] == 2).all() and (small[:, 3] == 1).all() and (small[:, 2] == 0).all()
    assert (resize_image(labels[None].astype(np.float32), (4, 4))[0] == labels.reshape(4, 2, 4, 2).mean((1, 3))).all()


def test_loss_weights_stored_as_float16_resample_by_nearest_neighbour_in_their_dtype():
    weights = np.repeat(np.repeat(np.arange(1, 5, dtype=np.float16).reshape(2, 2), 4, axis=0), 4, axis=1)  # 8x8
    smaller = resample_nearest(weights, (4, 4))  # as preprocessing shrinks a scaled image's or a volume's slices
    assert smaller.dtype == np.float16
    np.testing.assert_array_equal(smaller, np.repeat(np.repeat(weights[::4, ::4], 2, axis=0), 2, axis=1))
