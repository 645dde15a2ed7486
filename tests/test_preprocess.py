"""Normalisation, label mapping, and sources stored as one array each."""

import numpy as np
import pytest

from unetflow.data.normalization import normalize
from unetflow.data.preprocess import to_channels
from unetflow.io.labels import map_labels


def test_zscore_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(50, 5, (20, 30)), rng.normal(-3, 0.1, (20, 30))])  # channels first
    out = normalize(image)
    assert out.shape == (2, 20, 30) and out.dtype == np.float32
    assert np.allclose(out.mean(axis=(1, 2)), 0, atol=1e-5) and np.allclose(out.std(axis=(1, 2)), 1, atol=1e-4)


@pytest.mark.parametrize("method", ["zscore", "zscore_nonzero"])
def test_a_normalised_image_is_the_same_whatever_the_layout_of_its_array(method):
    photo = np.random.default_rng(0).integers(0, 256, (640, 640, 3)).astype(np.uint8)  # (H, W, C) as read
    view = np.moveaxis(photo, -1, 0)  # channels first, not contiguous: as an image read by the API is passed on
    np.testing.assert_array_equal(normalize(view, method), normalize(np.ascontiguousarray(view), method))
    assert abs(normalize(view, method).mean()) < 1e-6  # statistics summed in float64: exact to float32's precision


def test_zscore_nonzero_is_blind_to_the_zeros_around_the_object_and_keeps_them_zero():
    rng = np.random.default_rng(0)
    brain = np.stack([rng.normal(300, 40, (6, 8, 8)), rng.normal(50, 5, (6, 8, 8))])  # two modalities
    padded = np.pad(brain, ((0, 0), (4, 4), (10, 10), (10, 10)))  # the same, with much empty space around
    inside = normalize(brain, "zscore_nonzero")
    out = normalize(padded, "zscore_nonzero")
    np.testing.assert_allclose(out[:, 4:-4, 10:-10, 10:-10], inside, atol=1e-5)
    assert (out[:, :4] == 0).all() and np.allclose(inside.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert not np.allclose(normalize(padded)[:, 4:-4, 10:-10, 10:-10], normalize(brain), atol=0.1)  # plain: it shifts


def test_percentile_clipping_limits_outliers():
    image = np.zeros((1, 10, 10), np.uint16)
    image[0, 0, 0] = 60000
    clipped = normalize(image, clip_percentiles=[0, 90])
    assert clipped.max() == clipped.min() == 0  # the single outlier is clipped away, leaving a constant image


def test_constant_image_does_not_divide_by_zero():
    assert np.isfinite(normalize(np.full((1, 4, 4), 9, np.uint8))).all()


def test_minmax_range():
    out = normalize(np.arange(12, dtype=np.uint8).reshape(1, 3, 4), "minmax")
    assert out.min() == 0 and out.max() == 1


def test_unknown_method_names_the_key():
    with pytest.raises(ValueError, match="preprocess.normalization"):
        normalize(np.zeros((1, 2, 2)), "nope")


def test_map_labels_to_class_indices():
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    assert (map_labels(mask, [0, 255]) == [[0, 1], [1, 0]]).all()
    assert (map_labels(np.array([[3, 1, 7]]), [1, 3, 7]) == [[1, 0, 2]]).all()


def test_ignore_label_maps_to_255():
    from unetflow.io.labels import IGNORE_INDEX
    assert (map_labels(np.array([[0, 9, 5]]), [0, 5], ignore_value=9) == [[0, IGNORE_INDEX, 1]]).all()


def test_snap_to_nearest_class_value():
    from unetflow.io.labels import snap_to_nearest
    assert snap_to_nearest(np.array([0, 3, 100, 130, 250]), [0, 128, 255]).tolist() == [0, 0, 128, 128, 255]


def test_class_values_skip_the_ignore_row():
    import pandas as pd

    from unetflow.io.labels import class_values, ignore_value
    classes = pd.DataFrame({"index": [0, 1, 255], "name": ["a", "b", "ignore"], "value": [0, 5, 9],
                            "ignore": [False, False, True]})
    assert class_values(classes) == [0, 5] and ignore_value(classes) == 9


def test_volume_is_stored_as_one_array_in_array_order(tmp_path):
    from test_ingest import write_volume_pair

    from conftest import applied, build_manifest
    from unetflow.data.preprocess import preprocess_source
    from unetflow.io.store import load_array
    labels = write_volume_pair(tmp_path, "ct", shape=(12, 10, 4))
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), slice_axis=1)
    row = preprocess_source(manifest.iloc[0].to_dict(), classes, str(tmp_path / "arrays"), applied("zscore"))
    assert row["id"] == "ct" and [row["slices"], row["height"], row["width"]] == [10, 12, 4]
    assert np.array_equal(load_array(row["array_path"], "labels"), np.moveaxis(labels, 1, 0))
    image = load_array(row["array_path"], "image")
    assert image.shape == (1, 10, 12, 4) and image.dtype == np.float16
    assert abs(float(image.astype(np.float32).mean())) < 1e-2  # the volume z-scored as a whole
    assert row["spacing"] == [2.0, 2.0, 3.0] and row["class_voxels"] == np.bincount(labels.ravel()).tolist()


def test_volume_is_resampled_in_plane_and_along_the_slice_axis_to_the_target(tmp_path):
    from test_ingest import write_volume_pair

    from conftest import applied, build_manifest
    from unetflow.data.preprocess import preprocess_source
    from unetflow.io.store import load_array
    write_volume_pair(tmp_path, "ct", shape=(12, 10, 4))  # voxels 2 x 2 x 3 mm
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    row = preprocess_source(manifest.iloc[0].to_dict(), classes, str(tmp_path / "arrays"),
                            applied("zscore", spacing=[1.0, 2.0, 1.5]))
    assert [row["slices"], row["height"], row["width"]] == [8, 24, 10]  # z 4 -> 8, x 12 -> 24, y 10 stays
    assert row["spacing"] == [1.5, 1.0, 2.0] and row["original_slices"] == 4
    assert load_array(row["array_path"], "image").shape == (1, 8, 24, 10)
    assert set(np.unique(load_array(row["array_path"], "labels"))) <= {0, 1}


@pytest.mark.parametrize("declared", [1, 3])
def test_declared_channels_convert_mixed_grey_and_rgb_images(tmp_path, declared):
    import cv2

    from conftest import applied, build_manifest, write_pairs
    from unetflow.data.preprocess import preprocess_sources
    from unetflow.io.store import load_array

    images, masks = write_pairs(tmp_path, count=4)
    cv2.imwrite(str(images / "c1.png"), np.dstack([np.full((32, 40), v, np.uint8) for v in (10, 60, 200)]))
    manifest, classes = build_manifest(str(images), str(masks), channels=declared)
    assert manifest["channels"].tolist() == [1, 3, 1, 1] and (manifest["input_channels"] == declared).all()
    rows = preprocess_sources(manifest, classes, str(tmp_path / "arrays"), applied("minmax"))
    assert (rows["channels"] == declared).all()
    assert all(load_array(path, "image").shape == (declared, 1, 32, 40) for path in rows["array_path"])


def test_rgb_to_grey_is_luminance_and_grey_to_rgb_repeats():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8).transpose(2, 0, 1)  # (C, Y, X)
    np.testing.assert_allclose(to_channels(rgb, 1)[0, 0], [0.299 * 255, 0.587 * 255, 0.114 * 255], rtol=1e-3)
    grey = np.arange(6, dtype=np.uint16).reshape(1, 2, 3)
    np.testing.assert_array_equal(to_channels(grey, 3), np.repeat(grey, 3, axis=0))
    assert to_channels(grey, 1) is grey
