"""Tests of the tiled sliding-window inference in unetflow.net.tiling."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.inferers import sliding_window_inference
from torch import nn

from unetflow.net.model import UNet
from unetflow.net.tiling import (
    fits_on_device,
    gaussian_importance,
    prepare_for_inference,
    sliding_window_predict,
    tile_origins,
)


def pointwise_model(in_channels: int = 2, num_classes: int = 3, seed: int = 0) -> nn.Module:
    """A 1x1 convolution: each output pixel depends only on the same input pixel (translation-equivariant)."""
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, num_classes, 1)


def whole_image_softmax(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Reference: softmax of a single forward pass over the whole (C, H, W) image."""
    with torch.no_grad():
        return torch.softmax(model(image[None]), dim=1)[0]


def small_unet(seed: int = 0) -> nn.Module:
    """A small U-Net in eval mode with non-trivial BatchNorm statistics (padded convs: not translation-invariant)."""
    torch.manual_seed(seed)
    model = UNet(2, 3, depth=2, base_width=8)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("tile", [(16, 16), (17, 17), (16, 23), (1, 2)])
def test_gaussian_is_symmetric_positive_with_max_one_at_centre(tile):
    weights = gaussian_importance(tile)
    assert weights.shape == tile
    assert torch.allclose(weights, weights.flip(0)) and torch.allclose(weights, weights.flip(1))
    assert weights.min() > 0
    centre_rows = sorted({(tile[0] - 1) // 2, tile[0] // 2})
    centre_cols = sorted({(tile[1] - 1) // 2, tile[1] // 2})
    assert torch.allclose(weights[centre_rows][:, centre_cols], torch.ones(len(centre_rows), len(centre_cols)))
    assert (weights <= 1).all()


def test_gaussian_has_sigma_of_one_eighth_of_the_tile():
    tile = (33, 65)
    weights = gaussian_importance(tile)
    central_column, central_row = weights[:, tile[1] // 2], weights[tile[0] // 2, :]
    for profile, length in zip((central_column, central_row), tile):
        offset = length // 4
        expected = math.exp(-0.5 * (offset / (length / 8)) ** 2)
        assert profile[length // 2 + offset].item() == pytest.approx(expected, rel=1e-5)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 300), tile=st.integers(1, 100), overlap=st.floats(0, 0.95))
def test_tile_origins_cover_every_pixel_with_the_last_tile_flush(size, tile, overlap):
    origins = tile_origins(size, tile, overlap)
    assert origins[0] == 0
    if size <= tile:
        assert origins == [0]
        return
    assert origins[-1] == size - tile
    assert origins == sorted(set(origins))
    covered = torch.zeros(size, dtype=torch.bool)
    for origin in origins:
        covered[origin:origin + tile] = True
    assert covered.all()
    step = max(1, round(tile * (1 - overlap)))
    assert all(b - a == step for a, b in zip(origins[:-2], origins[1:-1]))
    assert 0 < origins[-1] - origins[-2] <= step


def test_tile_origins_reject_full_overlap():
    with pytest.raises(ValueError):
        tile_origins(100, 10, 1.0)


@pytest.mark.parametrize("shape, tile, overlap", [
    ((37, 50), (16, 16), 0.5),  # divisible by nothing
    ((37, 50), (13, 20), 0.25),  # odd tile, other overlap
    ((37, 50), (64, 64), 0.5),  # tile larger than the image: padded and cropped back
    ((10, 70), (32, 16), 0.5),  # tile larger in one axis only
])
def test_pointwise_model_equals_a_whole_image_forward_pass(shape, tile, overlap):
    model = pointwise_model()
    image = torch.randn(2, *shape)
    probabilities = sliding_window_predict(model, image, tile, overlap=overlap, batch_size=3)
    assert probabilities.shape == (3, *shape) and probabilities.dtype == torch.float32
    assert torch.allclose(probabilities.sum(0), torch.ones(shape), atol=1e-5)
    assert torch.allclose(probabilities, whole_image_softmax(model, image), atol=1e-5)


def test_result_is_an_ordinary_cpu_tensor_that_may_be_modified():
    probabilities = sliding_window_predict(pointwise_model(), torch.randn(2, 20, 20), (8, 8))
    assert probabilities.device.type == "cpu" and not probabilities.is_inference()
    probabilities.mul_(2)


def test_prediction_runs_in_eval_mode_and_restores_the_training_mode():
    model, image = small_unet(), torch.randn(2, 37, 50)
    in_eval = sliding_window_predict(model, image, (16, 16))
    model.train()
    model.decoders[0].eval()  # a submodule in its own mode
    assert torch.allclose(sliding_window_predict(model, image, (16, 16)), in_eval)  # BatchNorm used running stats
    assert model.training and model.encoders[0].training and not model.decoders[0].training


@pytest.mark.parametrize("mirror_axes", [(0,), (1,), (0, 1)])
def test_mirroring_a_flip_equivariant_model_changes_nothing(mirror_axes):
    model, image = pointwise_model(), torch.randn(2, 37, 50)
    plain = sliding_window_predict(model, image, (16, 16))
    mirrored = sliding_window_predict(model, image, (16, 16), mirror_axes=mirror_axes)
    assert torch.allclose(mirrored, plain, atol=1e-5)


def test_mirroring_averages_the_softmax_over_flips():
    model = nn.Conv2d(2, 3, 3, padding=1)  # an asymmetric kernel: not flip-equivariant
    image = torch.randn(2, 16, 24)
    mirrored = sliding_window_predict(model, image, (16, 24), mirror_axes=(1,))  # one tile: the whole image
    flipped = whole_image_softmax(model, image.flip(-1)).flip(-1)
    expected = (whole_image_softmax(model, image) + flipped) / 2
    assert not torch.allclose(flipped, whole_image_softmax(model, image), atol=1e-3)
    assert torch.allclose(mirrored, expected, atol=1e-5)


def test_mirror_axes_must_be_spatial():
    with pytest.raises(ValueError):
        sliding_window_predict(pointwise_model(), torch.randn(2, 8, 8), (8, 8), mirror_axes=(2,))


def test_host_accumulation_equals_device_accumulation():
    model, image = small_unet(), torch.randn(2, 37, 50)
    on_device = sliding_window_predict(model, image, (16, 16))
    on_host = sliding_window_predict(model, image, (16, 16), max_device_bytes=0)
    assert torch.allclose(on_host, on_device, atol=1e-6)


def test_accumulator_fits_when_twice_its_size_is_within_the_budget():
    needed = 2 * 3 * 40 * 50 * 4
    cpu = torch.device("cpu")
    assert fits_on_device(3, (40, 50), cpu, max_device_bytes=needed)
    assert not fits_on_device(3, (40, 50), cpu, max_device_bytes=needed - 1)
    assert fits_on_device(3, (40, 50), cpu, max_device_bytes=None)


def test_batch_size_does_not_change_the_result():
    model, image = small_unet(), torch.randn(2, 37, 50)
    one = sliding_window_predict(model, image, (16, 16), batch_size=1)
    many = sliding_window_predict(model, image, (16, 16), batch_size=7)
    assert torch.allclose(one, many, atol=1e-6)


# MONAI's scan step is int(tile * (1 - overlap)), ours round(...): these tiles give the same step in both.
# MONAI pads small images symmetrically too, and its Gaussian differs from ours only by a constant factor.
@pytest.mark.parametrize("shape, tile", [((37, 50), (16, 16)), ((70, 90), (17, 21)), ((20, 70), (32, 32))])
def test_matches_monai_gaussian_sliding_window_on_softmax(shape, tile):
    model, image = small_unet(), torch.randn(2, *shape)
    ours = sliding_window_predict(model, image, tile, overlap=0.5, batch_size=4)
    with torch.no_grad():
        theirs = sliding_window_inference(image[None], tile, 4, lambda tiles: torch.softmax(model(tiles), dim=1),
                                          overlap=0.5, mode="gaussian", sigma_scale=0.125)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)
    whole = whole_image_softmax(model, image)
    assert not torch.allclose(ours, whole, atol=1e-3)  # the tiling matters for this model, so the match is telling


def test_prepared_model_gives_the_same_probabilities_and_leaves_the_original_alone():
    model, image = small_unet(), torch.randn(2, 37, 50)
    prepared = prepare_for_inference(model)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in prepared.modules())
    assert any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    original = sliding_window_predict(model, image, (16, 16), channels_last=False)
    assert torch.allclose(sliding_window_predict(prepared, image, (16, 16)), original, atol=1e-5)


def test_cpu_bf16_autocast_is_close_to_float32_but_not_equal():
    model, image = small_unet(), torch.randn(2, 37, 50)
    float32 = sliding_window_predict(model, image, (16, 16))
    bf16 = sliding_window_predict(model, image, (16, 16), bf16=True)
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16.sum(0), torch.ones(37, 50), atol=1e-5)
    assert 0 < (bf16 - float32).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_is_close_to_cpu_float32():
    model, image = small_unet(), torch.randn(2, 37, 50)
    on_cpu = sliding_window_predict(model, image, (16, 16), device="cpu")
    on_cuda = sliding_window_predict(model, image, (16, 16), device="cuda")
    host_accumulated = sliding_window_predict(model, image, (16, 16), device="cuda", max_device_bytes=0)
    assert on_cuda.device.type == "cpu"
    assert torch.allclose(on_cuda, host_accumulated, atol=1e-5)
    assert (on_cuda - on_cpu).abs().max() < 0.05


def test_an_image_of_thousands_of_tiles_logs_each_tenth_done(caplog):
    import logging

    model = nn.Conv2d(1, 2, 1)
    with caplog.at_level(logging.INFO, logger="unetflow.net.tiling"):
        sliding_window_predict(model, torch.zeros(1, 800, 800), (32, 32), batch_size=64)  # 49 x 49 = 2401 tiles
    lines = [record.getMessage() for record in caplog.records if record.name == "unetflow.net.tiling"]
    assert len(lines) == 9 and lines[0] == "tiles of an image of 800x800: 256 of 2401 done"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unetflow.net.tiling"):
        sliding_window_predict(model, torch.zeros(1, 200, 200), (32, 32))  # 121 tiles: quick, no lines
    assert not caplog.records
