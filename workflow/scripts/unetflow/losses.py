"""Segmentation losses: cross-entropy, soft Dice, their sum, and deep supervision.

Pixels labelled IGNORE_INDEX (255, see `unetflow.labels`) count in neither loss.
"""

import torch
import torch.nn.functional as F

from unetflow.labels import IGNORE_INDEX


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (1..K-1), pooled over the batch ("batch Dice")."""
    probs = logits.float().softmax(dim=1)
    valid = (labels != IGNORE_INDEX).unsqueeze(1)
    one_hot = F.one_hot(labels.masked_fill(~valid[:, 0], 0), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    probs, one_hot = probs * valid, one_hot * valid
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * one_hot).sum(dims)[1:]
    denominator = (probs + one_hot).sum(dims)[1:]
    return 1 - ((2 * intersection + 1e-5) / (denominator + 1e-5)).mean()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce_dice") -> torch.Tensor:
    """The configured loss: 'ce', 'dice' or 'ce_dice' (their sum, as in nnU-Net)."""
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX) if kind in ("ce", "ce_dice") else 0
    dice = soft_dice_loss(logits, labels) if kind in ("dice", "ce_dice") else 0
    return ce + dice


def deep_supervision_loss(outputs: list[torch.Tensor], labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Weighted sum over resolutions (weights 1, 1/2, 1/4, ... normalised), labels downsampled by nearest neighbour."""
    weights = torch.tensor([0.5**i for i in range(len(outputs))])
    weights = weights / weights.sum()
    total = 0
    for weight, logits in zip(weights.tolist(), outputs):
        target = F.interpolate(labels[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
        total = total + weight * segmentation_loss(logits, target, kind)
    return total
