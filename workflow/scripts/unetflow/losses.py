"""Segmentation losses: cross-entropy, soft Dice, and their sum."""

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (1..K-1), pooled over the batch ("batch Dice")."""
    probs = logits.float().softmax(dim=1)
    one_hot = F.one_hot(labels, probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * one_hot).sum(dims)[1:]
    denominator = (probs + one_hot).sum(dims)[1:]
    return 1 - ((2 * intersection + 1e-5) / (denominator + 1e-5)).mean()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce_dice") -> torch.Tensor:
    """The configured loss: 'ce', 'dice' or 'ce_dice' (their sum, as in nnU-Net)."""
    ce = F.cross_entropy(logits.float(), labels) if kind in ("ce", "ce_dice") else 0
    dice = soft_dice_loss(logits, labels) if kind in ("dice", "ce_dice") else 0
    return ce + dice
