"""Validation during training: whole-image scores, the seeded subset of validation cases that keeps validation to
a set share of the run (validated every epoch, or every few epochs when even one case costs more than the share, as a
large validation volume does), and the best checkpoints kept for the final choice on the whole validation set (as
many as that share still affords).

The subset is sized by a cost model, not by a clock, so the same settings and data always validate on the same
cases (a resumed run equals an uninterrupted one): a training step costs about three forward passes of each patch
(forward and backward), validating a case one forward pass per tile. The share measured by the clock is logged and
stored in metrics.parquet (`val_seconds`, `val_share`).
"""

import math

import numpy as np
import torch

from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.resample import resample_probabilities
from unetflow.net.tiling import sliding_window_predict, tile_grid
from unetflow.train.losses import first_dice_class, segmentation_loss

VALIDATION_OVERLAP = 0.5
TRAIN_STEP_FORWARDS = 3  # forward + backward of a training patch, in forward passes
CANDIDATES_KEPT = 3  # best checkpoints by subset Dice compared on the whole validation set at the end


@torch.inference_mode()
def validation_scores(model, cases, patch, device, loss_kind: str, bf16: bool = False,
                      regions: torch.Tensor | None = None, dice_background: bool = False) -> tuple[float, float]:
    """Loss and foreground Dice (pooled over cases; mean over classes 1..K-1, 0..K-1 with `dice_background`, or
    with the region lookup `regions` (see `unetflow.train.losses`) over the regions, each predicted where its sigmoid
    exceeds 0.5) on whole images or volumes, tiled (in bf16 autocast when training uses it), the probabilities of an
    image smaller than its labels (a plan's resolution under 1) brought back onto the labels' grid as predictions
    are; NaN for no cases."""
    if not cases:
        return float("nan"), float("nan")
    regions = None if regions is None else regions.cpu()
    counts, losses = 0, []
    for image, labels in cases:
        probs = sliding_window_predict(model, torch.from_numpy(image), patch, overlap=VALIDATION_OVERLAP,
                                       device=device, bf16=bf16, sigmoid=regions is not None)
        if probs.shape[1:] != labels.shape:
            probs = torch.from_numpy(resample_probabilities(probs.float().numpy(), labels.shape))
        target = torch.from_numpy(labels.astype(np.int64))
        logits = probs.clamp_min(1e-8).log() if regions is None else torch.logit(probs, eps=1e-6)
        losses.append(float(segmentation_loss(logits[None], target[None], loss_kind, regions=regions,
                                              dice_background=dice_background)))
        counts = counts + overlap_counts(probs, target, regions)
    dice = 2 * counts[0] / (counts[1] + counts[2]).clamp_min(1)
    first = 0 if regions is not None else first_dice_class(dice_background)
    return float(np.mean(losses)), float(dice[first:].mean())


def overlap_counts(probs: torch.Tensor, target: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
    """(3, K): of each class (argmax of the softmax) or region (sigmoid > 0.5), the pixels predicted and true,
    predicted, true; ignored pixels left out."""
    valid = target != IGNORE_INDEX
    if regions is None:
        predicted = probs.max(0).indices  # the argmax; torch's argmax(0) takes 40x as long on the CPU
        pairs = [(predicted == k, target == k) for k in range(len(probs))]
    else:
        members = regions.bool()
        pairs = [(probs[r] > 0.5, members[target, r]) for r in range(len(probs))]
    return torch.stack([torch.stack([(pred & true & valid).sum(), (pred & valid).sum(), (true & valid).sum()])
                        for pred, true in pairs], dim=1).float()


def validation_tiles(shape, patch) -> int:
    """Tiles that validating a case of this shape (2D or 3D) runs through the network."""
    return len(tile_grid([max(s, p) for s, p in zip(shape, patch)], patch, VALIDATION_OVERLAP))


def validation_subset(case_shapes: list, patch: list[int], steps_per_epoch: int, batch_size: int, share: float,
                      seed: int) -> list[int]:
    """Indices of the validation cases validated every epoch: the longest prefix (at least one case) of a seeded
    permutation whose modelled cost is at most `share` of an epoch with its validation; all cases for share 1."""
    order = np.random.default_rng(seed).permutation(len(case_shapes)).tolist()
    if share >= 1 or not order:
        return sorted(order)
    train_cost = TRAIN_STEP_FORWARDS * steps_per_epoch * batch_size
    chosen, val_cost = [], 0
    for index in order:
        tiles = validation_tiles(case_shapes[index], patch)
        if chosen and (val_cost + tiles) > share * (train_cost + val_cost + tiles):
            break
        chosen.append(index)
        val_cost += tiles
    return sorted(chosen)


def validation_interval(subset_tiles: int, steps_per_epoch: int, batch_size: int, share: float) -> int:
    """Every how many epochs the subset (`subset_tiles` tiles) is validated: 1 when that keeps validation within
    `share` of the run by the cost model, else the fewest epochs between validations that do (a large validation
    volume, at least one case of which is always validated, is then validated less often)."""
    if share >= 1:
        return 1
    train_cost = TRAIN_STEP_FORWARDS * steps_per_epoch * batch_size
    return max(1, math.ceil(subset_tiles * (1 - share) / (share * train_cost)))


def end_validation_affordable(subset_tiles: int, steps: int, batch_size: int) -> bool:
    """Whether validating the subset (`subset_tiles` tiles) once more when the budget is spent costs less than the
    training did (`steps` steps of `batch_size`) by the cost model: a validation case far larger than what the budget
    trains (a whole mosaic after a few steps) is not validated then, so the budget holds."""
    return subset_tiles <= TRAIN_STEP_FORWARDS * steps * batch_size


def kept_candidates(candidates: list[dict], dice: float, epoch: int, model: torch.nn.Module, keep: int) -> list[dict]:
    """The `keep` best checkpoints by validation Dice (earlier first among equals) with this epoch's considered;
    without validation (NaN) the latest model only. Each candidate: dice, epoch, model (a copy of the weights)."""
    if math.isnan(dice):
        return [dict(dice=dice, epoch=epoch, model=weights_copy(model))]
    if len(candidates) >= keep and dice <= candidates[-1]["dice"]:
        return candidates
    entry = dict(dice=dice, epoch=epoch, model=weights_copy(model))
    return sorted([*candidates, entry], key=lambda c: -c["dice"])[:keep]


def weights_copy(model: torch.nn.Module) -> dict:
    """A snapshot of the weights that later optimiser steps do not change."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def affordable_candidates(full_tiles: int, subset_tiles: int, epochs: int, steps: int, batch_size: int,
                          share: float) -> int:
    """How many checkpoints the final choice may validate on the whole validation set (`full_tiles` tiles each)
    so that all validation, the epochs' subset (`subset_tiles` per epoch) included, stays within `share` of the run
    by the cost model (`steps` training steps of `batch_size`)."""
    if share >= 1:
        return CANDIDATES_KEPT
    spent = subset_tiles * epochs
    left = (share * (TRAIN_STEP_FORWARDS * steps * batch_size + spent) - spent) / (1 - share)
    return int(min(CANDIDATES_KEPT, max(0, left // max(1, full_tiles))))


def best_on_full_set(model, candidates: list[dict], cases, patch, device, loss_kind: str, bf16: bool, log,
                     affordable: int = CANDIDATES_KEPT, regions: torch.Tensor | None = None,
                     dice_background: bool = False) -> dict:
    """The candidate with the highest Dice on all validation `cases` (the first among equals) among the
    `affordable` best by subset Dice (`regions`, `dice_background`: see `validation_scores`); its `dice` becomes
    that full-set Dice.
    With fewer than two affordable (or one candidate) the best by subset Dice is kept without validating the whole
    set. The model's weights are restored."""
    if len(candidates) == 1 or affordable < 2:
        if len(candidates) > 1:
            log.info("final choice by the validation subset: comparing checkpoints on the whole validation set would "
                     "take validation over train.val_share of the run")
        return candidates[0]
    own = weights_copy(model)
    candidates = candidates[:affordable]
    scored = []
    for number, candidate in enumerate(candidates, start=1):
        model.load_state_dict(candidate["model"])
        _, dice = validation_scores(model, cases, patch, device, loss_kind, bf16, regions, dice_background)
        log.info("final choice, candidate %d of %d: epoch %d, subset Dice %.4f, full validation Dice %.4f", number,
                 len(candidates), candidate["epoch"], candidate["dice"], dice)
        scored.append(dict(candidate, dice=dice))
    model.load_state_dict(own)
    chosen = max(scored, key=lambda c: c["dice"])
    log.info("final choice: epoch %d, the best full validation Dice of the %d candidates", chosen["epoch"], len(scored))
    return chosen
