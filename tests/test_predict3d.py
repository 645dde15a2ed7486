"""Prediction with 3D U-Nets: NIfTI volumes predicted as one volume, per-slice results, mixed 2D/3D ensembles,
2D inputs refused, and a package of 2D and 3D models applied to new volumes as `predict` applies its models."""

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import applied, rotated_affine
from unetflow.export.onnx import tile_patch
from unetflow.infer.ensemble import (
    load_models,
    predict_probabilities,
    predict_unit,
    refuse_3d_models_on_2d_units,
    unit_probabilities,
)
from unetflow.infer.infer import InferInputError, Predictor
from unetflow.infer.package import PackageError, build_package, save_package
from unetflow.infer.predict import predict_cases
from unetflow.infer.tiling import sliding_window_predict
from unetflow.io.resample import resample_image, resample_probabilities
from unetflow.io.sources import source_images
from unetflow.io.store import save_case
from unetflow.io.volumes import slice_axis_target, target_slice_count
from unetflow.train.model import UNet

CFG = dict(overlap=0.5, batch_size=2, mirror=False, precision="fp32", largest_component=False, min_object_size=16)
CPU = torch.device("cpu")
PATCH_3D, PATCH_2D = [4, 8, 8], [16, 16]
TARGET = [0.5, 0.5, 1.5]  # X, Y, Z mm; only Z (the slice axis) matters to 3D prediction, in-plane is preprocessing's
CLASSES = pd.DataFrame({"index": [0, 1, 2], "name": ["background", "a", "b"], "value": [0, 1, 2], "color": None,
                        "ignore": False})


def unet(seed: int, dims: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(1, 3, depth=2, base_width=4, dims=dims).eval()


def volume_rows(slices: int, name: str = "vol") -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{name}_z{i}" for i in range(slices)], "image_path": f"{name}.nii.gz",
                         "kind": "volume", "volume": name, "slice": range(slices), "slice_axis": 2, "height": 8,
                         "width": 12})  # the slices' size in the file: predicted on it, no resampling back


@pytest.fixture(scope="module")
def slices() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 8, 12)).astype(np.float32) for _ in range(4)]


def test_a_3d_model_predicts_the_slices_stacked_as_one_volume_and_returns_them_slice_by_slice(slices):
    model = unet(0, 3)
    labels, probabilities = predict_unit([model], slices, PATCH_3D, {**CFG, "mirror": True}, CPU, 3, volume_rows(4))
    volume = torch.from_numpy(np.stack(slices, axis=1))  # (C, S, H, W)
    expected = sliding_window_predict(model, volume, PATCH_3D, overlap=0.5, batch_size=2, mirror_axes=(0, 1, 2))
    assert len(probabilities) == 4 and probabilities[0].shape == (3, 8, 12)
    for index, (probs, slice_labels) in enumerate(zip(probabilities, labels)):
        torch.testing.assert_close(probs, expected[:, index])
        np.testing.assert_array_equal(slice_labels, expected[:, index].argmax(0).numpy())
    per_slice = [sliding_window_predict(model, torch.from_numpy(s)[:, None], PATCH_3D) for s in slices]
    assert not torch.allclose(torch.stack(probabilities, 1), torch.cat(per_slice, 1), atol=1e-3)  # context matters


def test_a_mixed_ensemble_averages_3d_and_slice_by_slice_2d_softmax(slices):
    model3d, model2d = unet(1, 3), unet(2, 2)
    mixed = unit_probabilities([model3d, model2d], slices, [PATCH_3D, PATCH_2D], CFG, CPU, volume_rows(4))
    alone3d = unit_probabilities([model3d], slices, PATCH_3D, CFG, CPU, volume_rows(4))
    alone2d = [predict_probabilities([model2d], s, PATCH_2D, CFG, CPU) for s in slices]
    for index in range(4):
        torch.testing.assert_close(mixed[index], (alone3d[index] + alone2d[index]) / 2)


@pytest.fixture
def thick_slices(tmp_path) -> pd.DataFrame:
    """The rows of `volume_rows(4)` for a NIfTI file of 3 mm slices (1 x 1 mm in-plane, its header's spacing)."""
    nib.save(nib.Nifti1Image(np.zeros((8, 12, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "vol.nii.gz")
    return volume_rows(4).assign(image_path=str(tmp_path / "vol.nii.gz"))


def test_a_3d_model_predicts_on_the_target_slice_spacing_and_returns_each_original_slice(slices, thick_slices):
    """Target 1.5 mm along the slice axis: the 4 slices of 3 mm are predicted as 8, the softmax comes back to 4."""
    model = unet(1, 3)
    labels, probabilities = predict_unit([model], slices, PATCH_3D, CFG, CPU, 3, thick_slices, TARGET)
    fine = resample_image(np.stack(slices, axis=1), (8, 8, 12))
    expected = resample_probabilities(sliding_window_predict(model, torch.from_numpy(fine), PATCH_3D).numpy(),
                                      (4, 8, 12))
    assert len(labels) == len(probabilities) == 4 and labels[0].shape == (8, 12)
    for index, (probs, slice_labels) in enumerate(zip(probabilities, labels)):
        np.testing.assert_allclose(probs.numpy(), expected[:, index], atol=1e-6)
        np.testing.assert_array_equal(slice_labels, expected[:, index].argmax(0))
    stored = unit_probabilities([model], slices, PATCH_3D, CFG, CPU, thick_slices)
    assert not torch.allclose(torch.stack(probabilities, 1), torch.stack(stored, 1), atol=1e-3)  # the grid matters


def test_2d_members_predict_the_stored_slices_and_the_own_slice_spacing_is_a_no_op(slices, thick_slices):
    pair, patches = [unet(1, 3), unet(2, 2)], [PATCH_3D, PATCH_2D]
    mixed = unit_probabilities(pair, slices, patches, CFG, CPU, thick_slices, TARGET)
    alone3d = unit_probabilities(pair[:1], slices, PATCH_3D, CFG, CPU, thick_slices, TARGET)
    alone2d = [predict_probabilities(pair[1:], s, PATCH_2D, CFG, CPU) for s in slices]
    for index in range(4):
        torch.testing.assert_close(mixed[index], (alone3d[index] + alone2d[index]) / 2)
    own = unit_probabilities(pair, slices, patches, CFG, CPU, thick_slices, [9.0, 9.0, 3.0])  # Z: the file's own
    stored = unit_probabilities(pair, slices, patches, CFG, CPU, thick_slices)
    assert all(torch.equal(a, b) for a, b in zip(own, stored))


def test_2d_models_keep_predicting_a_volume_slice_by_slice(slices):
    model = unet(3, 2)
    probabilities = unit_probabilities([model], slices, PATCH_2D, CFG, CPU, volume_rows(4))
    for probs, image in zip(probabilities, slices):
        torch.testing.assert_close(probs, predict_probabilities([model], image, PATCH_2D, CFG, CPU))


def test_a_3d_model_refuses_a_2d_image_naming_it(slices):
    rows = pd.DataFrame({"id": ["cell7"], "image_path": ["data/cell7.png"], "kind": ["image"]})
    with pytest.raises(ValueError, match="data/cell7.png: a 2D image, but a 3D model"):
        unit_probabilities([unet(0, 3)], slices[:1], PATCH_3D, CFG, CPU, rows)
    with pytest.raises(ValueError, match="a 3D model predicts volumes"):
        predict_probabilities([unet(0, 3)], slices[0], PATCH_3D, CFG, CPU)


def test_predict_refuses_2d_cases_for_3d_checkpoints_before_predicting_naming_both():
    units = [("vol", volume_rows(3)), ("cell7", pd.DataFrame({"id": ["cell7"], "kind": ["image"]}))]
    with pytest.raises(ValueError, match=r"fold0/model.pt: 3D model\(s\).*1 of the images.*\(cell7\)"):
        refuse_3d_models_on_2d_units([unet(0, 2), unet(0, 3)], ["fold1/model.pt", "fold0/model.pt"], units)
    refuse_3d_models_on_2d_units([unet(0, 3)], ["fold0/model.pt"], units[:1])
    refuse_3d_models_on_2d_units([unet(0, 2)], ["fold1/model.pt"], units)


def save_checkpoint(path, model: UNet, patch: list[int]) -> str:
    torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=patch), path)
    return str(path)


def test_load_models_gives_each_model_its_patch_and_refuses_different_3d_patches(tmp_path):
    paths = [save_checkpoint(tmp_path / "a.pt", unet(0, 3), PATCH_3D),
             save_checkpoint(tmp_path / "b.pt", unet(1, 2), PATCH_2D)]
    models, patches = load_models(paths, CPU)
    assert patches == [PATCH_3D, PATCH_2D] and [m.hparams["dims"] for m in models] == [3, 2]
    paths.append(save_checkpoint(tmp_path / "c.pt", unet(2, 3), [8, 8, 8]))
    with pytest.raises(ValueError, match="3D models trained with different patch sizes"):
        load_models(paths, CPU)


def test_predict_cases_writes_a_volume_predicted_in_3d_and_refuses_2d_cases_before_writing(tmp_path, slices):
    checkpoint = save_checkpoint(tmp_path / "fold0.pt", unet(4, 3), PATCH_3D)
    nib.save(nib.Nifti1Image(np.zeros((8, 12, 4), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    rows = volume_rows(4).assign(image_path=str(tmp_path / "vol.nii.gz"), mask_path=str(tmp_path / "vol.nii.gz"))
    arrays = pd.Series({case_id: str(save_case(tmp_path / f"{case_id}.npz", image, np.zeros((8, 12), np.uint8)))
                        for case_id, image in zip(rows["id"], slices)})
    cfg = {**CFG, "save_probabilities": False, "min_object_size": 0}
    predict_cases(rows, arrays, [checkpoint], CLASSES, cfg, CPU, str(tmp_path / "masks"))
    written = np.asarray(nib.load(tmp_path / "masks" / "vol.nii.gz").dataobj)
    stored = [image.astype(np.float16) for image in slices]  # as the case files hold them
    expected = predict_probabilities([unet(4, 3)], np.stack(stored, axis=1), PATCH_3D, CFG, CPU).argmax(0)
    np.testing.assert_array_equal(written, np.moveaxis(expected.numpy(), 0, 2))
    flat = pd.DataFrame({"id": ["cell7"], "image_path": ["cell7.png"], "mask_path": ["cell7_mask.png"],
                         "kind": ["image"]})
    arrays["cell7"] = arrays.iloc[0]
    with pytest.raises(ValueError, match=r"fold0.pt: 3D model\(s\).*\(cell7\)"):
        predict_cases(pd.concat([rows, flat]), arrays, [checkpoint], CLASSES, cfg, CPU, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


def make_package(folder, members, preprocess: dict | None = None) -> tuple[str, list[str]]:
    """A package of models given as (seed, dims, patch), each with its own patch, and their checkpoints;
    `preprocess` by default as packages wrote it before 3D resampled the slice axis."""
    checkpoints = [save_checkpoint(folder / f"fold{number}.pt", unet(seed, dims), patch)
                   for number, (seed, dims, patch) in enumerate(members)]
    manifest = pd.DataFrame({"id": ["v_z0"], "image_path": ["v.nii.gz"], "mask_path": ["v_mask.nii.gz"],
                             "kind": ["volume"], "height": [12], "width": [10], "channels": [1], "dtype": ["float32"]})
    package = build_package(checkpoints, ["m/fold0", "m/fold1"], manifest, pd.DataFrame({"foreground_fraction": [0.3]}),
                            CLASSES, preprocess or dict(normalization="zscore", clip_percentiles=None), CFG, False, 2,
                            None,
                            [1.0, 1.0, 2.0])
    return save_package(package, folder / "model.pt"), checkpoints


def test_a_package_of_2d_and_3d_models_segments_a_volume_as_predict_does_and_refuses_2d_files(tmp_path):
    package, checkpoints = make_package(tmp_path, [(0, 3, PATCH_3D), (1, 2, PATCH_2D)])
    predictor = Predictor.load(package, "cpu")
    assert predictor.package.patches == [PATCH_3D, PATCH_2D]
    with pytest.raises(PackageError, match=r"model.pt: its models predict with different patches"):
        tile_patch(predictor.package)  # ONNX takes tiles of one size
    data = np.random.default_rng(1).normal(100, 20, (12, 10, 5)).astype(np.float32)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), scan)
    summary = predictor.predict_files([scan], tmp_path / "out")
    assert set(summary["id"]) == {"scan"}
    network = predictor.network_images(source_images(dict(kind="volume", image_path=str(scan), slice_axis=2)))
    rows = volume_rows(5, "scan").assign(image_path=str(scan), mask_path=str(scan), height=12, width=10)
    arrays = pd.Series({case_id: str(save_case(tmp_path / f"{case_id}.npz", image, np.zeros((12, 10), np.uint8)))
                        for case_id, image in zip(rows["id"], network)})
    predict_cases(rows, arrays, checkpoints, CLASSES, {**CFG, "save_probabilities": False}, CPU,
                  str(tmp_path / "predict"))
    inferred = np.asarray(nib.load(tmp_path / "out" / "scan.nii.gz").dataobj)
    np.testing.assert_array_equal(inferred, np.asarray(nib.load(tmp_path / "predict" / "scan.nii.gz").dataobj))
    assert len(np.unique(inferred)) > 1  # not a blank mask that any ensemble would give
    cv2.imwrite(str(tmp_path / "cell.png"), np.zeros((12, 10), np.uint8))
    with pytest.raises(InferInputError, match=r"cell.png: a 2D image, but .*model.pt holds 3D models"):
        predictor.predict_files([tmp_path / "cell.png"], tmp_path / "out2")


def test_a_3d_package_predicts_on_its_target_slice_spacing_exactly_as_predict_does(tmp_path):
    """A package whose models were trained on 0.5 mm slices segments a rotated volume of 2 mm slices on 20 slices
    of 0.5 mm and writes one label per original slice with the input's header: predict's mask, voxel for voxel."""
    settings = applied("zscore", spacing=[1.0, 1.0, 0.5])
    package, checkpoints = make_package(tmp_path, [(0, 3, PATCH_3D), (1, 3, PATCH_3D)], settings)
    predictor = Predictor.load(package, "cpu")
    data = np.random.default_rng(1).normal(100, 20, (12, 10, 5)).astype(np.float32)
    path, affine = tmp_path / "scan.nii.gz", rotated_affine([1.0, 1.0, 2.0], degrees=20)
    nib.save(nib.Nifti1Image(data, affine), path)
    predictor.predict_files([path], tmp_path / "out")
    rows = volume_rows(5, "scan").assign(image_path=str(path), mask_path=str(path), height=12, width=10)
    assert target_slice_count(rows, slice_axis_target(predictor.package.preprocess)) == 20
    network = predictor.network_images(np.moveaxis(data, 2, 0)[..., None], [1.0, 1.0, 2.0], 2)
    arrays = pd.Series({case_id: str(save_case(tmp_path / f"{case_id}.npz", image, np.zeros((12, 10), np.uint8)))
                        for case_id, image in zip(rows["id"], network)})
    predict_cases(rows, arrays, checkpoints, CLASSES,
                  {**CFG, "save_probabilities": False}, CPU, str(tmp_path / "predict"), slice_axis_target(settings))
    inferred, predicted = nib.load(tmp_path / "out" / "scan.nii.gz"), nib.load(tmp_path / "predict" / "scan.nii.gz")
    assert inferred.shape == (12, 10, 5) and np.allclose(inferred.affine, affine)
    np.testing.assert_array_equal(np.asarray(inferred.dataobj), np.asarray(predicted.dataobj))
