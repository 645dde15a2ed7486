"""Segmentation losses: cross-entropy, soft Dice, their sum, and deep supervision.

Pixels labelled IGNORE_INDEX (255, see `unetflow.io.labels`) count in neither loss. Optional per-pixel weights (the
instance target `weight_map`) weight the cross-entropy only: the mean over valid pixels of weight x CE, which is
the plain CE when every weight is 1; the Dice part is unchanged.
"""

import torch
import torch.nn.functional as F

from unetflow.io.labels import IGNORE_INDEX


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


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy averaged over the pixels not ignored, each weighted by `weights` (B, H, W) when given."""
    if weights is None:
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = labels != IGNORE_INDEX
    return (per_pixel * weights.float() * valid).sum() / valid.sum().clamp_min(1)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce_dice",
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """The configured loss: 'ce', 'dice' or 'ce_dice' (their sum, as in nnU-Net); `weights` weight the CE."""
    ce = weighted_cross_entropy(logits, labels, weights) if kind in ("ce", "ce_dice") else 0
    dice = soft_dice_loss(logits, labels) if kind in ("dice", "ce_dice") else 0
    return ce + dice


def deep_supervision_loss(outputs: list[torch.Tensor], labels: torch.Tensor, kind: str,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum over resolutions (weights 1, 1/2, 1/4, ... normalised), labels (and per-pixel weights)
    downsampled by nearest neighbour."""
    levels = torch.tensor([0.5**i for i in range(len(outputs))])
    levels = levels / levels.sum()
    total = 0
    for level, logits in zip(levels.tolist(), outputs):
        target = F.interpolate(labels[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
        pixel_weights = None if weights is None else \
            F.interpolate(weights[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0]
        total = total + level * segmentation_loss(logits, target, kind, pixel_weights)
    return total
