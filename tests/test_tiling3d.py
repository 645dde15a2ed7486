"""3D sliding-window inference in unetflow.net.tiling: tiles, blending, mirroring and accumulation of volumes."""

import itertools

import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from torch import nn

from unetflow.net.model import UNet
from unetflow.net.tiling import fits_on_device, gaussian_importance, prepare_for_inference, sliding_window_predict


def pointwise_model(in_channels: int = 2, num_classes: int = 3) -> nn.Module:
    """A 1x1x1 convolution: each output voxel depends only on the same input voxel."""
    torch.manual_seed(0)
    return nn.Conv3d(in_channels, num_classes, 1)


def small_unet3d(pool_kernels=None) -> nn.Module:
    """A small 3D U-Net in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = UNet(2, 3, depth=2, base_width=4, dims=3, pool_kernels=pool_kernels)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def whole_volume_softmax(model: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(volume[None]), dim=1)[0]


def test_gaussian_3d_is_the_floored_normalised_density_and_monai_s_up_to_a_factor():
    tile = (6, 9, 12)
    weights = gaussian_importance(tile)
    grids = torch.meshgrid(*(torch.arange(n) - (n - 1) / 2 for n in tile), indexing="ij")
    density = torch.exp(-0.5 * sum((grid / (n / 8)) ** 2 for grid, n in zip(grids, tile))).clamp(min=1e-3)
    assert weights.shape == tile and torch.allclose(weights, density / density.max(), atol=1e-6)
    theirs = compute_importance_map(tile, mode="gaussian", sigma_scale=0.125)
    assert torch.allclose(weights, theirs / theirs.max(), atol=1e-6)


@pytest.mark.parametrize("shape, tile, overlap", [
    ((16, 24, 24), (8, 16, 16), 0.5),
    ((7, 19, 23), (4, 8, 8), 0.25),  # divisible by nothing
    ((5, 30, 9), (8, 16, 16), 0.5),  # tile larger than the volume along two axes: padded and cropped back
])
def test_pointwise_model_equals_a_whole_volume_forward_pass(shape, tile, overlap):
    model, volume = pointwise_model(), torch.randn(2, *shape)
    probabilities = sliding_window_predict(model, volume, tile, overlap=overlap, batch_size=3)
    assert probabilities.shape == (3, *shape)
    assert torch.allclose(probabilities, whole_volume_softmax(model, volume), atol=1e-5)


def test_one_tile_without_overlap_is_a_whole_volume_forward_pass():
    model, volume = small_unet3d(), torch.randn(2, 16, 24, 24)
    tiled = sliding_window_predict(model, volume, (16, 24, 24), overlap=0)
    assert torch.allclose(tiled, whole_volume_softmax(model, volume), atol=1e-5)


def test_overlapping_gaussian_tiles_are_closer_to_the_whole_volume_than_hard_seams():
    model, volume = small_unet3d([(1, 2, 2), (2, 2, 2)]), torch.randn(2, 8, 16, 16)
    whole = whole_volume_softmax(model, volume)
    blended = sliding_window_predict(model, volume, (4, 8, 8), overlap=0.5)
    seams = sliding_window_predict(model, volume, (4, 8, 8), overlap=0)
    assert (blended - whole).abs().mean() < (seams - whole).abs().mean()
    assert not torch.allclose(seams, whole, atol=1e-3)  # the tiling matters for this model


def test_matches_monai_gaussian_sliding_window_in_3d():
    model, volume = small_unet3d(), torch.randn(2, 8, 12, 18)
    tile = (4, 8, 8)  # MONAI's step int(t * 0.5) equals our round(t * 0.5)
    ours = sliding_window_predict(model, volume, tile, overlap=0.5, batch_size=4)
    with torch.no_grad():
        theirs = sliding_window_inference(volume[None], tile, 4, lambda tiles: torch.softmax(model(tiles), dim=1),
                                          overlap=0.5, mode="gaussian", sigma_scale=0.125)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_mirroring_over_three_axes_averages_the_eight_flips():
    torch.manual_seed(0)
    model = nn.Conv3d(2, 3, 3, padding=1)  # an asymmetric kernel: not flip-equivariant
    volume = torch.randn(2, 6, 10, 12)
    mirrored = sliding_window_predict(model, volume, (6, 10, 12), mirror_axes=(0, 1, 2))
    flips = [dims for count in range(4) for dims in itertools.combinations((1, 2, 3), count)]
    expected = sum(whole_volume_softmax(model, volume.flip(dims)).flip(dims) for dims in flips) / 8
    assert not torch.allclose(mirrored, whole_volume_softmax(model, volume), atol=1e-3)
    assert torch.allclose(mirrored, expected, atol=1e-5)


def test_mirror_axes_must_be_spatial_axes_of_the_volume():
    with pytest.raises(ValueError, match="subset of"):
        sliding_window_predict(pointwise_model(), torch.randn(2, 4, 8, 8), (4, 8, 8), mirror_axes=(3,))


def test_tile_must_have_one_size_per_spatial_axis():
    with pytest.raises(ValueError, match="tile of 2 axes"):
        sliding_window_predict(pointwise_model(), torch.randn(2, 4, 8, 8), (8, 8))


def test_host_accumulation_equals_device_accumulation_and_batches_do_not_matter():
    model, volume = small_unet3d(), torch.randn(2, 5, 13, 10)
    on_device = sliding_window_predict(model, volume, (4, 8, 8), batch_size=2)
    assert torch.allclose(sliding_window_predict(model, volume, (4, 8, 8), max_device_bytes=0), on_device, atol=1e-6)
    assert torch.allclose(sliding_window_predict(model, volume, (4, 8, 8), batch_size=5), on_device, atol=1e-6)


def test_accumulator_of_a_volume_fits_when_twice_its_size_is_within_the_budget():
    needed = 2 * 3 * 10 * 40 * 50 * 4
    assert fits_on_device(3, (10, 40, 50), torch.device("cpu"), max_device_bytes=needed)
    assert not fits_on_device(3, (10, 40, 50), torch.device("cpu"), max_device_bytes=needed - 1)


def test_prepared_3d_model_folds_batchnorm_uses_channels_last_3d_and_agrees():
    model, volume = small_unet3d(), torch.randn(2, 9, 20, 17)
    prepared = prepare_for_inference(model)
    assert not any(isinstance(module, nn.BatchNorm3d) for module in prepared.modules())
    assert prepared.encoders[0][0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    original = sliding_window_predict(model, volume, (8, 8, 8), channels_last=False)
    assert torch.allclose(sliding_window_predict(prepared, volume, (8, 8, 8)), original, atol=1e-5)


def test_cpu_bf16_autocast_in_3d_is_close_to_float32():
    model, volume = small_unet3d(), torch.randn(2, 8, 16, 16)
    float32 = sliding_window_predict(model, volume, (8, 8, 8))
    bf16 = sliding_window_predict(model, volume, (8, 8, 8), bf16=True)
    assert bf16.dtype == torch.float32 and 0 < (bf16 - float32).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_3d_device_and_host_accumulation_agree_and_are_close_to_the_cpu():
    model, volume = small_unet3d(), torch.randn(2, 12, 20, 28)
    on_cpu = sliding_window_predict(model, volume, (8, 12, 16), device="cpu")
    on_cuda = sliding_window_predict(model, volume, (8, 12, 16), device="cuda", mirror_axes=(0, 1, 2))
    on_host = sliding_window_predict(model, volume, (8, 12, 16), device="cuda", mirror_axes=(0, 1, 2),
                                     max_device_bytes=0)
    assert torch.allclose(on_cuda, on_host, atol=1e-5)
    assert (sliding_window_predict(model, volume, (8, 12, 16), device="cuda") - on_cpu).abs().max() < 0.05
