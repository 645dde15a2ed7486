"""Normalisation and label mapping."""

import numpy as np
import pytest

from unetflow.preprocess import map_labels, normalize


def test_zscore_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(50, 5, (20, 30)), rng.normal(-3, 0.1, (20, 30))], axis=-1)
    out = normalize(image)
    assert out.shape == (2, 20, 30) and out.dtype == np.float32
    assert np.allclose(out.mean(axis=(1, 2)), 0, atol=1e-5) and np.allclose(out.std(axis=(1, 2)), 1, atol=1e-4)


def test_percentile_clipping_limits_outliers():
    image = np.zeros((10, 10, 1), np.uint16)
    image[0, 0] = 60000
    clipped = normalize(image, clip_percentiles=[0, 90])
    assert clipped.max() == clipped.min() == 0  # the single outlier is clipped away, leaving a constant image


def test_constant_image_does_not_divide_by_zero():
    assert np.isfinite(normalize(np.full((4, 4, 1), 9, np.uint8))).all()


def test_minmax_range():
    out = normalize(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), "minmax")
    assert out.min() == 0 and out.max() == 1


def test_unknown_method_names_the_key():
    with pytest.raises(ValueError, match="preprocess.normalization"):
        normalize(np.zeros((2, 2, 1)), "nope")


def test_map_labels_to_class_indices():
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    assert (map_labels(mask, [0, 255]) == [[0, 1], [1, 0]]).all()
    assert (map_labels(np.array([[3, 1, 7]]), [1, 3, 7]) == [[1, 0, 2]]).all()
