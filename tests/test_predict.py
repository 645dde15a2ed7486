"""Prediction: ensembles average the softmax, largest-component postprocessing, probability files."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from unetflow.infer.ensemble import (
    keep_largest_components,
    labels_from_probabilities,
    load_models,
    postprocess_unit,
    predict_probabilities,
)
from unetflow.infer.predict import checkpoint_list
from unetflow.infer.tiling import sliding_window_predict
from unetflow.io.prediction_files import read_probabilities, write_prediction, write_probabilities
from unetflow.train.model import UNet

CFG = dict(overlap=0.5, batch_size=2, mirror=False, precision="fp32")
PATCH = [16, 16]


def small_unet(seed: int, num_classes: int = 3) -> UNet:
    torch.manual_seed(seed)
    return UNet(1, num_classes, depth=2, base_width=4).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 24, 20)).astype(np.float32)


def test_two_identical_models_predict_as_one(image):
    model = small_unet(0)
    one = predict_probabilities([model], image, PATCH, CFG, torch.device("cpu"))
    two = predict_probabilities([model, copy.deepcopy(model)], image, PATCH, CFG, torch.device("cpu"))
    assert one.shape == (3, 24, 20)
    torch.testing.assert_close(two, one, rtol=0, atol=1e-7)


def test_ensemble_averages_the_members_softmax(image):
    first, second = small_unet(1), small_unet(2)
    cpu = torch.device("cpu")
    each = [predict_probabilities([model], image, PATCH, CFG, cpu) for model in (first, second)]
    assert not torch.allclose(each[0], each[1])
    torch.testing.assert_close(predict_probabilities([first, second], image, PATCH, CFG, cpu),
                               (each[0] + each[1]) / 2)


def test_mirror_option_averages_over_flips(image):
    model = small_unet(3)
    expected = sliding_window_predict(model, torch.from_numpy(image), tuple(PATCH), overlap=CFG["overlap"],
                                      batch_size=CFG["batch_size"], mirror_axes=(0, 1))
    mirrored = predict_probabilities([model], image, PATCH, {**CFG, "mirror": True}, torch.device("cpu"))
    torch.testing.assert_close(mirrored, expected)
    assert not torch.allclose(mirrored, predict_probabilities([model], image, PATCH, CFG, torch.device("cpu")))


def test_largest_component_keeps_the_biggest_blob_of_each_class():
    labels = np.zeros((12, 12), np.uint8)
    labels[0:3, 0:3] = 1    # class 1: 9 pixels, kept
    labels[8:10, 8:10] = 1  # class 1: 4 pixels, removed
    labels[0:2, 8:10] = 2   # class 2: 4 pixels, removed
    labels[5:8, 4:7] = 2    # class 2: 9 pixels, kept
    labels[11, 0] = 2       # class 2: 1 pixel, removed
    kept = keep_largest_components(labels, 3)
    expected = np.zeros_like(labels)
    expected[0:3, 0:3] = 1
    expected[5:8, 4:7] = 2
    np.testing.assert_array_equal(kept, expected)
    assert labels[8, 8] == 1  # the input is left untouched


def test_diagonal_neighbours_are_separate_components():
    labels = np.zeros((4, 4), np.uint8)
    labels[0:2, 0:2] = 1
    labels[2, 2] = 1  # touches the block only at a corner
    assert keep_largest_components(labels, 2)[2, 2] == 0


def test_labels_from_probabilities_is_the_argmax():
    probs = torch.full((2, 6, 6), 0.0)
    probs[0] = 1
    probs[:, 0:2, 0:2] = torch.tensor([0.2, 0.8])[:, None, None]  # 4-pixel blob of class 1
    probs[:, 5, 5] = torch.tensor([0.4, 0.6])                      # 1-pixel blob of class 1
    raw = labels_from_probabilities(probs)
    assert raw.dtype == np.uint8 and raw.sum() == 5 and raw[5, 5] == 1


def blobs_in_two_slices() -> list[np.ndarray]:
    """Two 6x6 slices: slice 0 has a 4-pixel blob of class 1, slice 1 a 1-pixel one elsewhere and a 2-pixel one
    right below the 4-pixel blob (connected to it through the slices)."""
    first, second = np.zeros((6, 6), np.uint8), np.zeros((6, 6), np.uint8)
    first[0:2, 0:2] = 1
    second[5, 5] = 1
    second[0, 0:2] = 1
    return [first, second]


def test_largest_component_of_a_2d_case_is_per_image():
    rows = pd.DataFrame({"id": ["a"], "kind": ["image"]})
    kept = postprocess_unit(blobs_in_two_slices()[1:], 2, rows, largest_component=True)
    assert kept[0].sum() == 2 and kept[0][5, 5] == 0
    assert postprocess_unit(blobs_in_two_slices(), 2, rows, largest_component=False)[1][5, 5] == 1


@pytest.mark.parametrize("axis", [0, 2])
def test_largest_component_of_a_volume_is_connected_through_its_slices(axis):
    rows = pd.DataFrame({"id": ["v_z0", "v_z1"], "kind": ["volume"] * 2, "slice_axis": [axis] * 2})
    first, second = postprocess_unit(blobs_in_two_slices(), 2, rows, largest_component=True)
    np.testing.assert_array_equal(first, blobs_in_two_slices()[0])  # one 3D component of 6 voxels survives
    assert second[0, 0:2].tolist() == [1, 1] and second[5, 5] == 0


def test_probabilities_are_written_as_float16_summing_to_one_and_read_back(image, tmp_path):
    probs = predict_probabilities([small_unet(4)], image, PATCH, CFG, torch.device("cpu"))
    path = write_probabilities(probs, tmp_path, "case1")
    assert path == tmp_path / "case1.npz"
    with np.load(path) as stored:
        assert list(stored) == ["probabilities"] and stored["probabilities"].dtype == np.float16
    back = read_probabilities(path)
    assert back.dtype == np.float32 and back.shape == tuple(probs.shape)
    np.testing.assert_allclose(back, probs.numpy(), atol=1e-3)
    np.testing.assert_allclose(back.sum(0), 1, atol=3e-3)


def save_checkpoint(path, model: UNet, patch: list[int]) -> str:
    torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=patch), path)
    return str(path)


def test_load_models_returns_every_model_and_its_patch(tmp_path, image):
    paths = [save_checkpoint(tmp_path / f"m{seed}.pt", small_unet(seed), PATCH) for seed in (5, 6)]
    models, patches = load_models(paths, torch.device("cpu"))
    assert len(models) == 2 and patches == [PATCH, PATCH]
    cpu = torch.device("cpu")
    torch.testing.assert_close(predict_probabilities(models[:1], image, patches[:1], CFG, cpu),
                               predict_probabilities([small_unet(5)], image, PATCH, CFG, cpu))


def test_load_models_refuses_different_patch_sizes(tmp_path):
    paths = [save_checkpoint(tmp_path / "a.pt", small_unet(0), [16, 16]),
             save_checkpoint(tmp_path / "b.pt", small_unet(0), [32, 32])]
    with pytest.raises(ValueError, match="different patch sizes"):
        load_models(paths, torch.device("cpu"))


def test_checkpoint_list_accepts_one_path_or_several():
    assert checkpoint_list("a.pt") == ["a.pt"]
    assert checkpoint_list(("a.pt", "b.pt")) == ["a.pt", "b.pt"]


def test_colour_coded_and_palette_masks_are_predicted_in_their_encoding(tmp_path):
    from PIL import Image

    from unetflow.io.prediction_files import read_prediction

    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:4], labels[4:, 5:] = 1, 2
    colours = pd.DataFrame({"index": [0, 1, 2], "name": ["bg", "red", "green"], "value": [0, 1, 2],
                            "color": [[0, 0, 0], [255, 0, 0], [0, 255, 0]], "ignore": False})
    rows = pd.DataFrame({"id": ["c"], "kind": ["image"], "mask_path": [str(tmp_path / "c_mask.png")]})
    (tmp_path / "colour").mkdir(), (tmp_path / "palette").mkdir()
    written = write_prediction([labels], colours, str(tmp_path / "colour"), "c", rows)
    with Image.open(written) as image:
        assert image.mode == "RGB" and image.getpixel((5, 4)) == (0, 255, 0)
    np.testing.assert_array_equal(read_prediction(written, colours), labels)

    palette = [0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * (3 * 253)
    source = Image.fromarray(labels, "P")
    source.putpalette(palette)
    source.save(tmp_path / "c_mask.png")
    indices = colours.assign(color=None)
    written = write_prediction([labels], indices, str(tmp_path / "palette"), "c", rows)
    with Image.open(written) as image:
        assert image.mode == "P" and image.getpalette()[:9] == palette[:9]
    np.testing.assert_array_equal(read_prediction(written, indices), labels)
