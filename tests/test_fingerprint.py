"""The data-set fingerprint (training cases only), the automatic normalisation, spacing and smallest-object rules, and
the normalisation of a volume's slices as one."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import applied, build_manifest, write_ct_pair, write_pairs
from unetflow.config import normalization_problems
from unetflow.data.preprocess import preprocess_settings, preprocess_source
from unetflow.infer.package import packaged_predict
from unetflow.io.images import write_mask
from unetflow.io.store import load_array
from unetflow.plan.fingerprint import (
    SLIDE_WINDOW,
    fingerprint_data,
    slide_normalization,
    smallest_object,
    target_spacing,
    thick_axes_note,
)

SPACING = (0.8, 0.8, 3.0)


def ct_data_set(folder, lesions=(150.0, 150.0, 150.0)) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three CT-like volumes (lesion intensities `lesions`): manifest, classes and a split with ct_a in train,
    ct_b in val and ct_c in test."""
    for seed, (name, hu) in enumerate(zip(("ct_a", "ct_b", "ct_c"), lesions)):
        write_ct_pair(folder, name, (32, 30, 6), SPACING, seed, degrees=20 * seed, lesion_hu=hu)
    manifest, classes = build_manifest(str(folder / "images"), str(folder / "labels"))
    splits = pd.DataFrame({"id": manifest["id"], "split": manifest["id"].map(
        {"ct_a": "train", "ct_b": "val", "ct_c": "test"})})
    return manifest, classes, splits


def test_ct_statistics_come_from_the_training_and_validation_volumes_only(tmp_path):
    table, summary = fingerprint_data(*ct_data_set(tmp_path))
    assert table["source"].tolist() == ["ct_a", "ct_b"]
    _, test_changed = fingerprint_data(*ct_data_set(tmp_path, lesions=(150.0, 150.0, 600.0)))
    assert test_changed == summary
    _, training_changed = fingerprint_data(*ct_data_set(tmp_path, lesions=(600.0, 150.0, 150.0)))
    assert training_changed["ct"]["mean"] > summary["ct"]["mean"] + 100
    assert summary["ct"]["mean"] == pytest.approx(150, abs=5) and summary["ct"]["std"] == pytest.approx(15, abs=3)
    assert summary["ct"]["low"] < 150 < summary["ct"]["high"]


def test_per_source_rows_measure_shape_spacing_classes_and_objects(tmp_path):
    labels, _ = write_ct_pair(tmp_path, "ct_a", (32, 30, 6), SPACING)
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "labels"))
    table, summary = fingerprint_data(manifest, classes, pd.DataFrame({"id": manifest["id"], "split": "train"}))
    row = table.iloc[0]
    assert list(row["shape"]) == [32, 30, 6] and list(row["spacing"]) == pytest.approx(SPACING)
    assert list(row["class_voxels"]) == [labels.size - labels.sum(), labels.sum()]
    assert row["objects"] == 1 and row["object_voxels_median"] == labels.sum()
    assert row["integer_valued"] and row["intensity_min"] < -900 and row["sampled_voxels"] == labels.sum()
    assert summary["target_spacing"] == pytest.approx(SPACING)


def test_automatic_normalisation_ct_for_ct_like_volumes_zscore_otherwise(tmp_path):
    _, ct = fingerprint_data(*ct_data_set(tmp_path / "ct"))
    assert ct["normalization"] == "ct" and "CT" in ct["normalization_reason"]
    mri = tmp_path / "mri"  # the same volumes as positive floats (an MRI-like range): no air, not CT
    manifest, classes, splits = ct_data_set(mri)
    for path in manifest["image_path"].unique():
        volume = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(volume.dataobj, np.float32) / 7 + 200, volume.affine), path)
    assert fingerprint_data(manifest, classes, splits)[1]["normalization"] == "zscore"
    stripped = ct_data_set(tmp_path / "stripped")  # MR-like, skull-stripped: a brain in a box of zeros
    for path in stripped[0]["image_path"].unique():
        volume = nib.load(path)
        brain = np.zeros(volume.shape, np.float32)
        brain[8:24, 8:22, 1:5] = np.asarray(volume.dataobj, np.float32)[8:24, 8:22, 1:5] / 7 + 200
        nib.save(nib.Nifti1Image(brain, volume.affine), path)
    nonzero = fingerprint_data(*stripped)[1]
    assert nonzero["normalization"] == "zscore_nonzero" and "background of zeros" in nonzero["normalization_reason"]
    cropped = ct_data_set(tmp_path / "cropped")  # one training CT cropped to the body: no air
    volume = nib.load(cropped[0]["image_path"].iloc[1])
    nib.save(nib.Nifti1Image(np.clip(np.asarray(volume.dataobj), 0, None), volume.affine), volume.get_filename())
    mixed = fingerprint_data(*cropped)[1]
    assert mixed["normalization"] == "zscore" and "1 of 2 training volumes look like CT" in \
        mixed["normalization_reason"] and "but not ct_b (minimum 0)" in mixed["normalization_reason"]
    images, masks = write_pairs(tmp_path / "flat", count=3)
    manifest, classes = build_manifest(str(images), str(masks))
    _, flat = fingerprint_data(manifest, classes, pd.DataFrame({"id": manifest["id"], "split": "train"}))
    assert (flat["normalization"], flat["target_spacing"]) == ("zscore", None)


def test_slides_are_normalised_once_for_the_data_set_8_bit_by_a_window_16_bit_by_their_foreground():
    stats = dict(mean=3100.0, std=400.0, low=2000.0, high=4500.0)
    assert slide_normalization(pd.DataFrame({"dtype": ["uint8", "uint8"]}), stats)[0] == "window"
    scheme, reason = slide_normalization(pd.DataFrame({"dtype": ["uint16"]}), stats)
    assert scheme == "ct" and f"(the 8-bit window {SLIDE_WINDOW} would saturate them)" in reason
    settings = preprocess_settings(dict(normalization="auto", clip_percentiles=None, window=None, spacing="auto",
                                        scale="auto"), dict(normalization=scheme, normalization_reason=reason, ct=stats,
                                                            window=None, scale=1.0, scale_reason="slides",
                                                            target_spacing=None, target_spacing_reason=""))
    assert settings["normalization"] == "ct" and settings["ct"] == stats


def test_target_spacing_is_the_median_and_the_coarse_axis_of_anisotropic_data_takes_its_10th_percentile():
    spacings = np.array([[0.7, 0.7, 1.0], [0.8, 0.8, 1.5], [0.9, 0.9, 1.2]])
    assert target_spacing(spacings)[0] == pytest.approx([0.8, 0.8, 1.2])
    anisotropic = np.array([[0.7, 0.7, 5.0], [0.8, 0.8, 3.0], [0.9, 0.9, 5.0], [0.8, 0.8, 5.0]])
    spacing, reason = target_spacing(anisotropic)
    assert spacing == pytest.approx([0.8, 0.8, np.percentile([5, 3, 5, 5], 10)]) and "anisotropic" in reason
    assert target_spacing(np.zeros((0, 3)))[0] is None
    planes = np.array([[0.8, 0.8, 5.0]] * 7 + [[0.8, 5.0, 0.8]] * 3)  # axial and coronal acquisitions
    spacing, reason = target_spacing(planes)
    assert spacing == pytest.approx([0.8, 0.8, 0.8]) and "disagree on their thick axis (axis 1 in 3, axis 2 in 7" in \
        reason and "anisotropic" not in target_spacing(spacings)[1] + thick_axes_note(anisotropic)


@pytest.mark.parametrize("scheme", ["zscore", "ct"])
def test_the_slices_of_a_volume_share_one_normalisation(tmp_path, scheme):
    write_ct_pair(tmp_path, "ct_a", (32, 30, 6), SPACING, lesion_hu=1500.0)  # bright in the middle slices
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "labels"))
    ct = dict(low=100.0, high=200.0, mean=150.0, std=15.0)
    row = preprocess_source(manifest.iloc[0].to_dict(), classes, str(tmp_path), applied(scheme, ct=ct))
    stored = load_array(row["array_path"], "image")[0].astype(np.float32)
    raw = np.moveaxis(np.asarray(nib.load(tmp_path / "images" / "ct_a.nii.gz").dataobj, np.float32), 2, 0)
    if scheme == "zscore":
        expected = (raw - raw.mean()) / raw.std()
        assert np.ptp(stored.mean(axis=(1, 2))) > 0.2  # slices keep their differences: not z-scored one by one
    else:
        expected = (np.clip(raw, 100, 200) - 150) / 15
    np.testing.assert_allclose(stored, expected, atol=2e-2, rtol=1e-3)


def test_settings_resolve_auto_from_the_fingerprint_and_refuse_ct_without_foreground():
    fingerprint = dict(normalization="ct", normalization_reason="looks like CT", ct=dict(low=0, high=1, mean=0, std=1),
                       target_spacing=[1.0, 1.0, 2.0], target_spacing_reason="median", scale=0.5, scale_reason="wide")
    settings = preprocess_settings(dict(normalization="auto", clip_percentiles=None, window=None, spacing="auto",
                                        scale="auto"), fingerprint)
    assert (settings["normalization"], settings["ct"], settings["spacing"]) == ("ct", fingerprint["ct"], [1, 1, 2])
    assert (settings["scale"], settings["scale_source"]) == (0.5, "auto: wide")
    explicit = preprocess_settings(dict(normalization="zscore", clip_percentiles=None, window=None, spacing=None,
                                        scale=1), fingerprint)
    assert (explicit["normalization"], explicit["spacing"], explicit["scale"]) == ("zscore", None, 1.0)
    assert settings["normalization_source"] == "auto: looks like CT"
    with pytest.raises(ValueError, match="preprocess.normalization: ct needs"):
        preprocess_settings(dict(normalization="ct", clip_percentiles=None, window=None, spacing=None, scale=1),
                            {**fingerprint, "ct": None})


@pytest.mark.parametrize("section,problem", [
    (dict(normalization="window", window=None, clip_percentiles=None), "window needs preprocess.window"),
    (dict(normalization="zscore", window=[-1000, 1000], clip_percentiles=None), "preprocess.window is set"),
    (dict(normalization="ct", window=None, clip_percentiles=[1, 99]), "clip_percentiles applies to zscore"),
])
def test_inconsistent_normalisation_settings_are_refused_naming_the_keys(section, problem):
    assert problem in " ".join(normalization_problems(section))


def test_the_smallest_object_is_the_1st_percentile_of_the_areas_but_at_most_half_their_median():
    mixed = np.array([21] * 5 + list(range(40, 500)))
    assert smallest_object(mixed)[0] == np.floor(np.percentile(mixed, 1)) and "percentile" in smallest_object(mixed)[1]
    size, reason = smallest_object(np.full(200, 300))  # objects of one size: those predicted a little small stay
    assert size == 150 and "half their median" in reason
    assert smallest_object(np.zeros(0))[0] == 0


def test_instance_masks_give_the_areas_of_their_objects_touching_or_not(tmp_path):
    ids = np.zeros((60, 60), np.uint16)
    ids[5:15, 5:15], ids[5:15, 15:25], ids[40:43, 40:43] = 1, 2, 3  # two touching 100 px squares and a 9 px one
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    write_mask(tmp_path / "images" / "a.png", (ids > 0).astype(np.uint8) * 200)
    write_mask(tmp_path / "masks" / "a.png", ids)
    manifest, classes = build_manifest(tmp_path / "images", tmp_path / "masks", instances=True)
    _, summary = fingerprint_data(manifest, classes, pd.DataFrame({"id": manifest["id"], "split": "train"}))
    assert summary["min_object_size"] == int(np.percentile([9, 100, 100], 1)) and "median 100 px" in summary[
        "min_object_size_reason"]
    _, classes_only = fingerprint_data(*ct_data_set(tmp_path / "ct"))
    assert classes_only["min_object_size"] == 0  # no instance masks: nothing to drop


def test_the_package_holds_the_fingerprints_min_object_size_for_auto_and_an_old_fingerprint_says_what_to_do():
    predict = dict(overlap=0.5, min_object_size="auto", object_probability="auto")  # chosen later, on validation
    assert packaged_predict(predict, dict(min_object_size=21), "f.json") == dict(overlap=0.5, min_object_size=21,
                                                                                 object_probability=0.5)
    explicit = dict(predict, min_object_size=5, object_probability=0.6)
    assert packaged_predict(explicit, {}, "f.json") == explicit
    with pytest.raises(ValueError, match="f.json was written by an earlier unetflow.*set predict.min_object_size"):
        packaged_predict(predict, {}, "f.json")
