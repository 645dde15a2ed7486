"""Normalisation and label mapping."""

import numpy as np
import pytest

from unetflow.data.normalization import normalize
from unetflow.data.preprocess import to_channels
from unetflow.io.labels import map_labels


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


def test_volume_slices_are_preprocessed_and_reassembled(tmp_path):
    import nibabel as nib
    import pandas as pd
    from test_ingest import write_volume_pair

    from conftest import applied, build_manifest
    from unetflow.data.preprocess import preprocess_source
    from unetflow.io.store import load_case
    from unetflow.io.volumes import stack_slices
    labels = write_volume_pair(tmp_path, "ct", shape=(12, 10, 4))
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), slice_axis=1)
    out = tmp_path / "cases"
    out.mkdir()
    rows = pd.DataFrame(preprocess_source(manifest, classes, str(out), applied("zscore")))
    assert rows["id"].tolist() == [f"ct_z{i}" for i in range(10)] and (rows["height"] == 12).all()
    rebuilt = stack_slices([load_case(p)[1] for p in rows["array_path"]], axis=1)
    assert np.array_equal(rebuilt, labels)
    assert nib.load(tmp_path / "images" / "ct.nii.gz").shape == rebuilt.shape


@pytest.mark.parametrize("declared", [1, 3])
def test_declared_channels_convert_mixed_grey_and_rgb_images(tmp_path, declared):
    import cv2
    import pandas as pd

    from conftest import applied, build_manifest, write_pairs
    from unetflow.data.preprocess import preprocess_source
    from unetflow.io.store import load_case

    images, masks = write_pairs(tmp_path, count=4)
    cv2.imwrite(str(images / "c1.png"), np.dstack([np.full((32, 40), v, np.uint8) for v in (10, 60, 200)]))
    manifest, classes = build_manifest(str(images), str(masks), channels=declared)
    assert manifest["channels"].tolist() == [1, 3, 1, 1] and (manifest["input_channels"] == declared).all()
    out = tmp_path / "cases"
    out.mkdir()
    rows = pd.concat([pd.DataFrame(preprocess_source(manifest.iloc[[i]], classes, str(out), applied("minmax")))
                      for i in range(4)])
    assert (rows["channels"] == declared).all()
    assert all(load_case(path)[0].shape[0] == declared for path in rows["array_path"])


def test_rgb_to_grey_is_luminance_and_grey_to_rgb_repeats():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(to_channels(rgb, 1)[0, :, 0], [0.299 * 255, 0.587 * 255, 0.114 * 255], rtol=1e-3)
    grey = np.arange(6, dtype=np.uint16).reshape(2, 3, 1)
    np.testing.assert_array_equal(to_channels(grey, 3), np.repeat(grey, 3, axis=2))
    assert to_channels(grey, 1) is grey
