"""U-Net architecture and losses."""

import pytest
import torch

from unetflow.net.model import UNet, pool_kernels_for
from unetflow.train.losses import deep_supervision_loss, segmentation_loss, soft_dice_loss


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 37, 50), (1, 3, 9, 130)])
def test_output_keeps_input_size_for_any_shape(shape):
    model = UNet(shape[1], 4, depth=3, base_width=4).eval()
    assert model(torch.randn(shape)).shape == (shape[0], 4, *shape[2:])


def test_architecture_follows_the_depth_and_width():
    model = UNet(1, 2, depth=2, base_width=8, norm="none")
    widths = [block[0].out_channels for block in model.encoders]
    assert widths == [8, 16, 32]
    assert all(isinstance(up, torch.nn.ConvTranspose2d) and up.stride == (2, 2) for up in model.ups)
    assert model.decoders[0][0].in_channels == 16  # skip concatenation doubles the input channels


def test_he_initialisation_variance():
    torch.manual_seed(0)
    conv = UNet(1, 2, depth=1, base_width=64, norm="none").encoders[1][0]
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert torch.all(conv.bias == 0)


def ronneberger_parameter_count(in_channels: int, num_classes: int, depth: int, width: int) -> int:
    """Parameters of the 2D U-Net with batch norm, counted from the architecture: bias-free 3x3 convolutions with
    a weight and a bias per batch-norm channel, 2x2 up-convolutions with bias, a 1x1 head with bias."""
    widths = [width * 2**level for level in range(depth + 1)]
    block = lambda i, o: i * o * 9 + o * o * 9 + 2 * 2 * o  # noqa: E731
    encoders = sum(block(in_channels if level == 0 else widths[level - 1], w) for level, w in enumerate(widths))
    ups = sum(widths[level + 1] * widths[level] * 4 + widths[level] for level in range(depth))
    decoders = sum(block(2 * widths[level], widths[level]) for level in range(depth))
    return encoders + ups + decoders + widths[0] * num_classes + num_classes


def test_2d_parameter_count_is_the_architecture_s():
    model = UNet(3, 4, depth=3, base_width=8)
    assert sum(p.numel() for p in model.parameters()) == ronneberger_parameter_count(3, 4, 3, 8)


def test_hparams_written_before_3d_load_as_2d(tmp_path):
    old_hparams = dict(in_channels=1, num_classes=2, depth=2, base_width=4, norm="batch", deep_supervision=False)
    weights = UNet(**old_hparams).state_dict()
    torch.save(dict(hparams=old_hparams, model=weights), tmp_path / "old.pt")
    checkpoint = torch.load(tmp_path / "old.pt", weights_only=True)
    model = UNet(**checkpoint["hparams"])
    model.load_state_dict(checkpoint["model"])
    assert model.hparams["dims"] == 2 and model.hparams["pool_kernels"] == [[2, 2], [2, 2]]
    assert model.eval()(torch.randn(1, 1, 20, 12)).shape == (1, 2, 20, 12)


def test_hparams_of_a_3d_model_rebuild_it_after_a_weights_only_round_trip(tmp_path):
    model = UNet(1, 3, depth=2, base_width=4, dims=3, pool_kernels=[(1, 2, 2), (2, 2, 2)])
    torch.save(dict(hparams=model.hparams, model=model.state_dict()), tmp_path / "m.pt")
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=True)
    rebuilt = UNet(**checkpoint["hparams"])
    rebuilt.load_state_dict(checkpoint["model"])
    assert rebuilt.hparams == model.hparams and rebuilt.pool_kernels == [(1, 2, 2), (2, 2, 2)]


@pytest.mark.parametrize("shape", [(1, 1, 16, 24, 24), (2, 2, 5, 11, 17), (1, 1, 1, 9, 3)])
def test_3d_output_keeps_input_size_for_any_shape(shape):
    model = UNet(shape[1], 3, depth=3, base_width=4, dims=3).eval()
    assert model(torch.randn(shape)).shape == (shape[0], 3, *shape[2:])


def test_anisotropic_pooling_strides_and_padding():
    model = UNet(1, 2, depth=3, base_width=4, dims=3, pool_kernels=[(1, 2, 2), (1, 2, 2), (2, 2, 2)]).eval()
    assert [up.stride for up in model.ups] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert [up.kernel_size for up in model.ups] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert model.size_multiple() == (2, 8, 8)
    assert model(torch.randn(1, 1, 3, 10, 9)).shape == (1, 2, 3, 10, 9)
    with pytest.raises(ValueError, match="3 spatial axes"):
        model(torch.randn(1, 1, 10, 9))


def test_anisotropic_model_sees_depth_at_its_resolution():
    """With no pooling along depth until the last level, the coarsest map keeps the depth of the input."""
    model = UNet(1, 2, depth=2, base_width=4, dims=3, pool_kernels=[(1, 2, 2), (1, 2, 2)], norm="none")
    maps = []
    model.encoders[2].register_forward_hook(lambda module, args, out: maps.append(out.shape))
    model(torch.randn(1, 1, 3, 8, 8))
    assert maps == [(1, 16, 3, 2, 2)]


@pytest.mark.parametrize("kernels", [[(2, 2, 2)], [(2, 2), (2, 2)], [(3, 2, 2), (2, 2, 2)]])
def test_bad_pool_kernels_are_refused(kernels):
    with pytest.raises(ValueError, match="pool_kernels"):
        UNet(1, 2, depth=2, dims=3, pool_kernels=kernels)


def test_3d_deep_supervision_shapes_and_loss():
    model = UNet(1, 2, depth=3, base_width=4, dims=3, deep_supervision=True,
                 pool_kernels=[(1, 2, 2), (2, 2, 2), (2, 2, 2)]).train()
    outputs = model(torch.randn(2, 1, 8, 16, 16))
    assert [o.shape[2:] for o in outputs] == [(8, 16, 16), (8, 8, 8), (4, 4, 4)]
    loss = deep_supervision_loss(outputs, torch.randint(0, 2, (2, 8, 16, 16)), "ce_dice")
    loss.backward()
    assert loss.item() > 0 and model.encoders[0][0].weight.grad is not None
    assert model.eval()(torch.randn(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)


def test_pool_kernels_wait_for_a_coarse_axis_and_stop_at_the_minimum_map():
    # 5 mm slices, 1 mm pixels: only in-plane pools until its spacing (4 mm) is within a factor 2 of 5 mm
    assert pool_kernels_for([5.0, 1.0, 1.0], [32, 128, 128], 5) == [
        (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    # isotropic: every axis pools until its map would fall below 4 voxels
    assert pool_kernels_for(None, [16, 64, 64], 4) == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert pool_kernels_for([1.0, 1.0], [8, 8], 2, min_size=4) == [(2, 2), (1, 1)]


def test_dice_loss_zero_for_perfect_and_high_for_wrong():
    labels = torch.randint(0, 3, (2, 16, 16))
    perfect = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float() * 50
    assert soft_dice_loss(perfect, labels).item() == pytest.approx(0, abs=1e-4)
    wrong = torch.nn.functional.one_hot((labels + 1) % 3, 3).movedim(-1, 1).float() * 50
    assert soft_dice_loss(wrong, labels).item() > 0.99


def test_loss_kinds_add_up():
    logits, labels = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    both = segmentation_loss(logits, labels, "ce_dice")
    assert both == pytest.approx(segmentation_loss(logits, labels, "ce") + segmentation_loss(logits, labels, "dice"))


def test_ignored_pixels_do_not_change_the_loss():
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[:, :3] = 255
    logits = torch.randn(2, 3, 8, 8)
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 3, 3, 8) * 10
    assert segmentation_loss(changed, labels) == pytest.approx(segmentation_loss(logits, labels).item())
    assert segmentation_loss(changed, labels) != segmentation_loss(changed, labels.clamp(max=2))
