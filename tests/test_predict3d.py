"""Prediction with 3D U-Nets: a NIfTI volume predicted as one network array (resampled to the target spacing, the
softmax brought back onto the file's slices), mixed 2D/3D ensembles, 2D inputs refused, and a package of 2D and 3D
models applied to new volumes."""

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import applied, rotated_affine
from unetflow.export.onnx import tile_patch
from unetflow.infer.infer import InferInputError, check_images
from unetflow.infer.package import PackageError, build_package, load_package, save_package
from unetflow.infer.predictor import Predictor, model_probabilities
from unetflow.io.resample import resample_probabilities
from unetflow.net.model import UNet
from unetflow.net.tiling import sliding_window_predict

CFG = dict(overlap=0.5, batch_size=2, mirror=False, precision="fp32", largest_component=False,
           min_object_size=16, object_probability=0.5)
CPU = torch.device("cpu")
PATCH_3D, PATCH_2D = [4, 8, 8], [16, 16]
CLASSES = pd.DataFrame({"index": [0, 1, 2], "name": ["background", "a", "b"], "value": [0, 1, 2], "color": None,
                        "ignore": False})
PLAN = dict(device=dict(type="cpu", name="cpu", memory_bytes=None), traits={},
            settings=dict(resolution=dict(value=1.0, source="planned", reason="enough passes")))


def unet(seed: int, dims: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(1, 3, depth=2, base_width=4, dims=dims).eval()


def make_package(folder, members, preprocess: dict | None = None) -> str:
    """A package of models given as (seed, dims, patch), each with its own patch; z-scored volumes, not resampled
    unless `preprocess` says so."""
    checkpoints = []
    for number, (seed, dims, patch) in enumerate(members):
        model = unet(seed, dims)
        checkpoints.append(str(folder / f"fold{number}.pt"))
        torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=patch, plan=PLAN),
                   checkpoints[-1])
    manifest = pd.DataFrame({"id": ["v"], "image_path": ["v.nii.gz"], "mask_path": ["v_mask.nii.gz"],
                             "kind": ["volume"], "slices": [5], "height": [12], "width": [10], "channels": [1],
                             "input_channels": [1], "dtype": ["float32"]})
    package = build_package(checkpoints, [f"m/fold{i}" for i in range(len(members))], PLAN, manifest,
                            pd.DataFrame({"foreground_fraction": [0.3]}), CLASSES, preprocess or applied("zscore"),
                            CFG, dict(channels=None, slice_axis=2))
    return str(save_package(package, folder / "model.pt"))


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """A network array (C, Z, Y, X) of 4 slices of 8 x 12."""
    return np.random.default_rng(0).standard_normal((1, 4, 8, 12)).astype(np.float32)


def test_a_3d_model_predicts_the_network_array_as_one_volume(volume, tmp_path):
    model = unet(0, 3)
    predictor = Predictor.load(make_package(tmp_path, [(0, 3, PATCH_3D)]), "cpu")
    probabilities = model_probabilities(predictor.models[0], torch.from_numpy(volume), PATCH_3D,
                                        {**CFG, "mirror": True}, CPU)
    expected = sliding_window_predict(model, torch.from_numpy(volume), PATCH_3D, overlap=0.5, batch_size=2,
                                      mirror_axes=(0, 1, 2))
    assert probabilities.shape == (3, 4, 8, 12)
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-4)  # BatchNorm folded for inference
    per_slice = torch.cat([sliding_window_predict(model, torch.from_numpy(volume[:, [z]]), PATCH_3D)
                           for z in range(4)], 1)
    assert not torch.allclose(probabilities, per_slice, atol=1e-3)  # the context of the other slices matters


def test_a_mixed_ensemble_averages_3d_and_slice_by_slice_2d_softmax(volume, tmp_path):
    members = [(1, 3, PATCH_3D), (2, 2, PATCH_2D)]
    mixed = Predictor.load(make_package(tmp_path, members), "cpu").probabilities(volume)
    models = Predictor.load(make_package(tmp_path, members), "cpu").models
    alone3d = model_probabilities(models[0], torch.from_numpy(volume), PATCH_3D, CFG, CPU)
    alone2d = torch.stack([model_probabilities(models[1], torch.from_numpy(volume[:, [z]]), PATCH_2D, CFG, CPU)[:, 0]
                           for z in range(4)], 1)  # a 2D model, slice by slice
    torch.testing.assert_close(mixed, (alone3d + alone2d) / 2)


def test_a_volume_is_predicted_on_the_target_slice_spacing_and_comes_back_to_each_original_slice(tmp_path):
    """Target 1.5 mm along the slice axis: the 4 slices of 3 mm are predicted as 8, the softmax comes back to 4."""
    predictor = Predictor.load(make_package(tmp_path, [(1, 3, PATCH_3D)], applied("zscore", spacing=[1, 1, 1.5])),
                               "cpu")
    image = np.random.default_rng(1).normal(100, 20, (1, 4, 8, 12)).astype(np.float32)
    network = predictor.network_array(image, [3.0, 1.0, 1.0], 2)
    assert network.shape == (1, 8, 8, 12)
    expected = resample_probabilities(predictor.probabilities(network).numpy(), (4, 8, 12))
    np.testing.assert_allclose(predictor.image_probabilities(image, [3.0, 1.0, 1.0], 2), expected, atol=1e-6)
    own = Predictor.load(make_package(tmp_path, [(1, 3, PATCH_3D)]), "cpu")  # spacing null: as stored
    assert own.network_array(image, [3.0, 1.0, 1.0], 2).shape == (1, 4, 8, 12)


def test_a_package_of_2d_and_3d_models_segments_a_volume_and_refuses_2d_files(tmp_path):
    predictor = Predictor.load(make_package(tmp_path, [(0, 3, PATCH_3D), (1, 2, PATCH_2D)]), "cpu")
    assert predictor.package.patches == [PATCH_3D, PATCH_2D]
    with pytest.raises(PackageError, match=r"model.pt: its models predict with different patches"):
        tile_patch(predictor.package)  # ONNX takes tiles of one size
    data = np.random.default_rng(1).normal(100, 20, (12, 10, 5)).astype(np.float32)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), scan)
    sources = check_images([scan], predictor.package)
    summary, _ = predictor.predict_sources(sources, tmp_path / "out")
    assert set(summary["id"]) == {"scan"}
    probabilities = predictor.source_probabilities(sources.iloc[0].to_dict())
    written = np.asarray(nib.load(tmp_path / "out" / "scan.nii.gz").dataobj)
    np.testing.assert_array_equal(written, np.moveaxis(probabilities.argmax(0), 0, 2))
    assert len(np.unique(written)) > 1  # not a blank mask that any ensemble would give
    cv2.imwrite(str(tmp_path / "cell.png"), np.zeros((12, 10), np.uint8))
    with pytest.raises(InferInputError, match=r"cell.png: a 2D image, but .*model.pt holds 3D models"):
        check_images([tmp_path / "cell.png"], load_package(tmp_path / "model.pt"))


def test_a_3d_package_segments_a_rotated_volume_of_thick_slices_on_its_target_spacing(tmp_path):
    """A package whose models were trained on 0.5 mm slices segments a rotated volume of 2 mm slices on 20 slices
    of 0.5 mm and writes one label per original slice with the input's header."""
    settings = applied("zscore", spacing=[1.0, 1.0, 0.5])
    predictor = Predictor.load(make_package(tmp_path, [(0, 3, PATCH_3D), (1, 3, PATCH_3D)], settings), "cpu")
    data = np.random.default_rng(1).normal(100, 20, (12, 10, 5)).astype(np.float32)
    path, affine = tmp_path / "scan.nii.gz", rotated_affine([1.0, 1.0, 2.0], degrees=20)
    nib.save(nib.Nifti1Image(data, affine), path)
    sources = check_images([path], predictor.package)
    row = sources.iloc[0].to_dict()
    network = predictor.network_array(np.moveaxis(data, 2, 0)[None], [2.0, 1.0, 1.0], 2)
    assert network.shape == (1, 20, 12, 10)
    predictor.predict_sources(sources, tmp_path / "out")
    written = nib.load(tmp_path / "out" / "scan.nii.gz")
    assert written.shape == (12, 10, 5) and np.allclose(written.affine, affine)
    expected = resample_probabilities(predictor.probabilities(network).numpy(), (5, 12, 10)).argmax(0)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.moveaxis(expected, 0, 2))
    np.testing.assert_array_equal(predictor.source_probabilities(row).argmax(0), expected)
