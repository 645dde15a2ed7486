"""The soft Dice of classes with and without class 0 (`train.dice_background`): the loss, deep supervision and the
validation Dice that chooses the checkpoint."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from unetflow.io.labels import IGNORE_INDEX
from unetflow.train.losses import deep_supervision_loss, segmentation_loss, soft_dice_loss
from unetflow.train.validation import best_on_full_set, overlap_counts, validation_scores


def thin_class_zero(size: int = 32) -> torch.Tensor:
    """Labels (1, size, size): class 1 everywhere but every 8th row, class 0 (thin lines, as ISBI's membranes)."""
    labels = torch.ones(1, size, size, dtype=torch.long)
    labels[:, ::8] = 0
    return labels


def confident(labels: torch.Tensor, classes: int = 2) -> torch.Tensor:
    """Logits (B, classes, H, W) that predict `labels` with near certainty."""
    return 20.0 * torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()


def test_a_missed_class_zero_costs_the_dice_only_when_it_is_covered():
    labels = thin_class_zero()
    all_one = confident(torch.ones_like(labels))  # the lines missed: class 1 everywhere
    share = (labels == 0).float().mean().item()  # 1/8
    dice_one = 2 * (1 - share) / (1 + (1 - share))
    assert soft_dice_loss(all_one, labels) == pytest.approx(1 - dice_one, abs=1e-4)  # small: 0.067
    assert soft_dice_loss(all_one, labels, dice_background=True) == pytest.approx(1 - dice_one / 2, abs=1e-4)
    assert soft_dice_loss(confident(labels), labels, dice_background=True) < 1e-4


def test_the_dice_of_class_zero_is_the_soft_dice_of_its_probability():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :2] = 1  # 16 of 64 pixels
    logits = torch.zeros(1, 2, 8, 8)
    logits[:, 1] = torch.where(labels[0] == 1, 20.0, np.log(0.4 / 0.6))  # p(1) = 1 on class 1, 0.4 elsewhere
    dice_one = 2 * 16 / (16 + 16 + 0.4 * 48)
    dice_zero = 2 * 0.6 * 48 / (0.6 * 48 + 48)
    assert soft_dice_loss(logits, labels) == pytest.approx(1 - dice_one, abs=1e-4)
    assert soft_dice_loss(logits, labels, True) == pytest.approx(1 - (dice_zero + dice_one) / 2, abs=1e-4)


def test_ignored_pixels_stay_out_of_the_dice_of_class_zero():
    labels = thin_class_zero()
    logits = confident(labels)
    ignored, changed = labels.clone(), logits.clone()
    ignored[:, 16:] = IGNORE_INDEX
    changed[:, :, 16:] = confident(1 - labels)[:, :, 16:]  # wrong everywhere it is ignored
    assert segmentation_loss(changed, ignored, "dice", dice_background=True) < 1e-4


def test_the_setting_reaches_every_level_of_deep_supervision():
    labels = thin_class_zero()
    all_one = confident(torch.ones_like(labels))
    outputs = [all_one, all_one[:, :, ::2, ::2]]
    without, with_zero = (deep_supervision_loss(outputs, labels, "ce_dice", dice_background=flag)
                          for flag in (False, True))
    levels = [segmentation_loss(level, labels[:, ::size, ::size], "ce_dice", dice_background=True)
              for level, size in zip(outputs, (1, 2))]
    assert with_zero == pytest.approx((2 * levels[0] + levels[1]).item() / 3, rel=1e-5)
    assert with_zero > without + 0.3


class Constant(nn.Module):
    """A 'model' whose logits are class 1 everywhere, whatever the image."""

    def forward(self, images):
        logits = torch.zeros(images.shape[0], 2, *images.shape[2:])
        logits[:, 1] = 20.0
        return logits


def test_validation_dice_covers_class_zero_when_asked():
    labels = thin_class_zero()[0].numpy().astype(np.uint8)
    case = (np.zeros((1, 32, 32), np.float32), labels)
    _, foreground = validation_scores(Constant(), [case], [32, 32], "cpu", "ce_dice")
    _, both = validation_scores(Constant(), [case], [32, 32], "cpu", "ce_dice", dice_background=True)
    assert foreground == pytest.approx(2 * 28 / (28 + 32), abs=1e-6)  # 28 of 32 rows are class 1
    assert both == pytest.approx(foreground / 2, abs=1e-6)  # class 0 never predicted: Dice 0


def test_the_final_choice_compares_checkpoints_by_the_same_dice():
    labels = thin_class_zero()[0].numpy().astype(np.uint8)
    case = (np.zeros((1, 32, 32), np.float32), labels)
    model = nn.Conv2d(1, 2, 1)
    with torch.no_grad():  # class 1 everywhere
        model.weight.zero_()
        model.bias.copy_(torch.tensor([0.0, 20.0]))
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    candidates = [dict(dice=0.9, epoch=1, model=weights), dict(dice=0.8, epoch=2, model=weights)]
    chosen = {flag: best_on_full_set(model, candidates, [case], [32, 32], "cpu", "ce", False, logging.getLogger(),
                                     affordable=2, dice_background=flag)["dice"] for flag in (False, True)}
    assert chosen[True] == pytest.approx(chosen[False] / 2, abs=1e-6) and chosen[False] > 0.9


def test_validation_counts_each_pixel_for_its_argmax_class_the_first_among_equals():
    probs = torch.from_numpy(np.random.default_rng(0).integers(0, 3, (3, 40, 40)) / 2).float()  # many ties
    target = torch.from_numpy(np.random.default_rng(1).integers(0, 3, (40, 40)))
    target[:5] = IGNORE_INDEX
    predicted, valid = probs.numpy().argmax(0), (target != IGNORE_INDEX).numpy()
    expected = [[((predicted == k) & (target.numpy() == k) & valid).sum(), ((predicted == k) & valid).sum(),
                 ((target.numpy() == k) & valid).sum()] for k in range(3)]
    assert overlap_counts(probs, target, None).numpy().T.tolist() == np.array(expected, float).tolist()
