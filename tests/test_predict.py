"""Prediction: ensembles average the softmax, mirroring, largest-component postprocessing per unit, probability files,
masks in the encoding of the training masks."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from unetflow.infer.package import Package, training_palette
from unetflow.infer.predictor import Predictor, keep_largest_components
from unetflow.io.prediction_files import read_class_mask, read_probabilities, write_class_mask, write_probabilities
from unetflow.net.model import UNet
from unetflow.net.tiling import sliding_window_predict

CFG = dict(overlap=0.5, batch_size=2, mirror=False, precision="fp32", largest_component=False,
           min_object_size=16, object_probability=0.5)
PATCH = [16, 16]
CLASSES = pd.DataFrame({"index": [0, 1, 2], "name": ["bg", "a", "b"], "value": [0, 1, 2], "color": None,
                        "ignore": False})


def small_unet(seed: int, num_classes: int = 3) -> UNet:
    torch.manual_seed(seed)
    return UNet(1, num_classes, depth=2, base_width=4).eval()


def predictor_of(models: list[UNet], **predict) -> Predictor:
    """A Predictor of `models` (patch PATCH) with the prediction settings CFG changed by `predict`."""
    members = [dict(hparams=m.hparams, weights=m.state_dict(), source=f"m{i}", patch_size=PATCH, resolution=1.0)
               for i, m in enumerate(models)]
    package = Package(path="in memory", models=members, plan={}, preprocess={}, input_channels=1,
                      convert_channels=False, slice_axis=2, classes=CLASSES, palette=None, predict={**CFG, **predict},
                      training_data={}, versions={})
    return Predictor(package, "cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A network array (C, Z, Y, X) of one 24x20 slice."""
    return np.random.default_rng(0).standard_normal((1, 1, 24, 20)).astype(np.float32)


def test_two_identical_models_predict_as_one(image):
    model = small_unet(0)
    one = predictor_of([model]).probabilities(image)
    two = predictor_of([model, copy.deepcopy(model)]).probabilities(image)
    assert one.shape == (3, 1, 24, 20)
    torch.testing.assert_close(two, one, rtol=0, atol=1e-7)


def test_ensemble_averages_the_members_softmax(image):
    first, second = small_unet(1), small_unet(2)
    each = [predictor_of([model]).probabilities(image) for model in (first, second)]
    assert not torch.allclose(each[0], each[1])
    torch.testing.assert_close(predictor_of([first, second]).probabilities(image), (each[0] + each[1]) / 2)


def test_mirror_option_averages_over_flips(image):
    model = small_unet(3)
    expected = sliding_window_predict(model, torch.from_numpy(image[:, 0]), tuple(PATCH), overlap=CFG["overlap"],
                                      batch_size=CFG["batch_size"], mirror_axes=(0, 1))
    mirrored = predictor_of([model], mirror=True).probabilities(image)[:, 0]
    torch.testing.assert_close(mirrored, expected)
    assert not torch.allclose(mirrored, predictor_of([model]).probabilities(image)[:, 0])


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


def blobs_in_two_slices() -> np.ndarray:
    """Two 6x6 slices (Z, Y, X): slice 0 has a 4-pixel blob of class 1, slice 1 a 1-pixel one elsewhere and a 2-pixel
    one right below the 4-pixel blob (connected to it through the slices)."""
    labels = np.zeros((2, 6, 6), np.uint8)
    labels[0, 0:2, 0:2] = 1
    labels[1, 5, 5] = 1
    labels[1, 0, 0:2] = 1
    return labels


def one_hot(labels: np.ndarray, classes: int = 3) -> np.ndarray:
    return np.stack([labels == value for value in range(classes)]).astype(np.float32)


def test_labels_are_the_argmax_and_without_postprocessing_keep_every_blob():
    labels, objects, _ = predictor_of([small_unet(0)]).postprocessed(dict(id="s", kind="stack", slices=2),
                                                                  one_hot(blobs_in_two_slices()))
    assert labels.dtype == np.uint8 and objects == []
    np.testing.assert_array_equal(labels, blobs_in_two_slices())


def test_largest_component_of_a_stack_is_per_page():
    predictor = predictor_of([small_unet(0)], largest_component=True)
    kept, _, _ = predictor.postprocessed(dict(id="s", kind="stack", slices=2), one_hot(blobs_in_two_slices()))
    np.testing.assert_array_equal(kept[0], blobs_in_two_slices()[0])
    assert kept[1].sum() == 2 and kept[1, 5, 5] == 0  # the page's own largest blob survives


def test_largest_component_of_a_volume_is_connected_through_its_slices():
    predictor = predictor_of([small_unet(0)], largest_component=True)
    kept, _, _ = predictor.postprocessed(dict(id="v", kind="volume", slices=2), one_hot(blobs_in_two_slices()))
    np.testing.assert_array_equal(kept[0], blobs_in_two_slices()[0])  # one 3D component of 6 voxels survives
    assert kept[1, 0, 0:2].tolist() == [1, 1] and kept[1, 5, 5] == 0


def test_probabilities_are_written_as_float16_summing_to_one_and_read_back(image, tmp_path):
    probs = predictor_of([small_unet(4)]).probabilities(image)[:, 0]
    path = write_probabilities(probs, tmp_path, "case1")
    assert path == tmp_path / "case1.npz"
    with np.load(path) as stored:
        assert list(stored) == ["probabilities"] and stored["probabilities"].dtype == np.float16
    back = read_probabilities(path)
    assert back.dtype == np.float32 and back.shape == tuple(probs.shape)
    np.testing.assert_allclose(back, probs.numpy(), atol=1e-3)
    np.testing.assert_allclose(back.sum(0), 1, atol=3e-3)


def test_colour_coded_and_palette_masks_are_predicted_in_their_encoding(tmp_path):
    from PIL import Image

    labels = np.zeros((1, 6, 8), np.uint8)
    labels[0, 1:3, 1:4], labels[0, 4:, 5:] = 1, 2
    colours = CLASSES.assign(color=[[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    row = dict(id="c", kind="image", mask_path=str(tmp_path / "c_mask.png"))
    written = write_class_mask(tmp_path / "colour" / "c.png", labels, colours, row)
    with Image.open(written) as image:
        assert image.mode == "RGB" and image.getpixel((5, 4)) == (0, 255, 0)
    np.testing.assert_array_equal(read_class_mask(written, colours, row), labels)

    palette = [0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * (3 * 253)
    written = write_class_mask(tmp_path / "palette" / "c.png", labels, CLASSES, row, palette)
    with Image.open(written) as image:
        assert image.mode == "P" and image.getpalette()[:9] == palette[:9]
    np.testing.assert_array_equal(read_class_mask(written, CLASSES, row), labels)


def test_a_stack_is_written_as_one_multi_page_tiff_and_read_back(tmp_path):
    labels = blobs_in_two_slices() * 2
    row = dict(id="s", kind="stack", mask_path=str(tmp_path / "s.tif"))
    written = write_class_mask(tmp_path / "s.tif", labels, CLASSES, row)
    np.testing.assert_array_equal(read_class_mask(written, CLASSES, row), labels)


def test_the_api_refuses_what_the_file_check_refuses_and_drops_alpha_as_files_are_read(tmp_path):
    from test_infer import make_package

    predictor = Predictor.load(make_package(tmp_path), "cpu")  # a grey model
    with pytest.raises(ValueError, match="the image: 3 channel"):
        predictor.predict_array(np.zeros((20, 20, 3), np.uint8) + np.uint8([0, 0, 255]))  # colour: grey ones pass
    with pytest.raises(ValueError, match="the image: 400 pixels are NaN"):
        predictor.predict_array(np.full((20, 20), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, C\) with the channels last, got shape \(1, 20, 20\)"):
        predictor.predict_array(np.zeros((1, 20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"network_array takes a read image \(channels, slices, height, width\)"):
        predictor.network_array(np.zeros((20, 20), np.uint8))
    grey = np.random.default_rng(0).integers(0, 255, (20, 20), dtype=np.uint8)
    with_alpha = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    np.testing.assert_array_equal(predictor.predict_array(with_alpha)[1], predictor.predict_array(grey)[1])


def test_predictions_are_palette_pngs_only_when_most_training_masks_are(tmp_path):
    paths = []
    for index in range(3):
        labels = Image.fromarray(np.full((8, 8), index % 2, np.uint8), mode="P" if index < 2 else "L")
        if index < 2:
            labels.putpalette([0, 0, 0, 200, 30, 30])
        labels.save(tmp_path / f"m{index}.png")
        paths.append(str(tmp_path / f"m{index}.png"))
    assert training_palette(pd.DataFrame({"mask_path": paths}))[:6] == [0, 0, 0, 200, 30, 30]
    assert training_palette(pd.DataFrame({"mask_path": paths[1:]})) is None  # one palette mask of two
