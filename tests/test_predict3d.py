"""Prediction with 3D U-Nets: NIfTI volumes predicted as one volume, per-slice results, mixed 2D/3D ensembles,
2D inputs refused, and a package of 2D and 3D models applied to new volumes as `predict` applies its models."""

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from unetflow.cases import save_case
from unetflow.ensemble import (
    load_models,
    predict_probabilities,
    predict_unit,
    refuse_3d_models_on_2d_units,
    unit_probabilities,
)
from unetflow.export import tile_patch
from unetflow.infer import InferInputError, Predictor
from unetflow.model import UNet
from unetflow.package import PackageError, build_package, save_package
from unetflow.predict import predict_cases
from unetflow.sources import source_images
from unetflow.tiling import sliding_window_predict

CFG = dict(overlap=0.5, batch_size=2, mirror=False, precision="fp32", largest_component=False, min_object_size=16)
CPU = torch.device("cpu")
PATCH_3D, PATCH_2D = [4, 8, 8], [16, 16]
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


def make_mixed_package(folder) -> tuple[str, list[str]]:
    """A package of a 3D and a 2D model (each its own patch) and their checkpoints."""
    checkpoints = [save_checkpoint(folder / "fold0.pt", unet(0, 3), PATCH_3D),
                   save_checkpoint(folder / "fold1.pt", unet(1, 2), PATCH_2D)]
    manifest = pd.DataFrame({"id": ["v_z0"], "image_path": ["v.nii.gz"], "mask_path": ["v_mask.nii.gz"],
                             "kind": ["volume"], "height": [12], "width": [10], "channels": [1], "dtype": ["float32"]})
    package = build_package(checkpoints, ["m/fold0", "m/fold1"], manifest, pd.DataFrame({"foreground_fraction": [0.3]}),
                            CLASSES, dict(normalization="zscore", clip_percentiles=None), CFG, False, 2, None,
                            [1.0, 1.0, 2.0])
    return save_package(package, folder / "model.pt"), checkpoints


def test_a_package_of_2d_and_3d_models_segments_a_volume_as_predict_does_and_refuses_2d_files(tmp_path):
    package, checkpoints = make_mixed_package(tmp_path)
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
