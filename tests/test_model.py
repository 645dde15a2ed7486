"""U-Net architecture and losses."""

import pytest
import torch

from unetflow.losses import segmentation_loss, soft_dice_loss
from unetflow.model import UNet


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
