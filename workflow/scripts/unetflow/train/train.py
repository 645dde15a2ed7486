"""Training: the training loop, checkpoints and resume (cases and patches are in unetflow.train.sampler, the budget
and the learning-rate schedule in unetflow.train.schedule, validation in unetflow.train.validation).

Everything random in training draws from two torch generators (patch sampling on the CPU, augmentation on the
training device) whose states are checkpointed, so an interrupted run that resumes ends with the same weights as an
uninterrupted one (on the CPU, with a budget in steps: `epochs` or `budget_steps`). Checkpoints hold only tensors
and plain Python values: they load with `torch.load(path, weights_only=True)`.
"""

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unetflow.gpu import peak_memory_bytes, pick_device, uses_bf16
from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.regions import Regions
from unetflow.net.model import UNet
from unetflow.tracking.tracker import Tracker
from unetflow.train.augment import augment_batch, augment_weighted_batch
from unetflow.train.finetune import load_init_weights
from unetflow.train.losses import deep_supervision_loss, segmentation_loss
from unetflow.train.sampler import PatchSampler
from unetflow.train.schedule import Clock, lr_factor, training_budget
from unetflow.train.validation import (
    CANDIDATES_KEPT,
    affordable_candidates,
    best_on_full_set,
    end_validation_affordable,
    kept_candidates,
    validation_interval,
    validation_scores,
    validation_subset,
    validation_tiles,
)

CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}
BOOKKEEPING_KEYS = ("resume_every",)  # train keys of when the state is saved, not of what is trained


def make_optimizer(parameters, cfg: dict) -> torch.optim.Optimizer:
    """Adam (default, as in the U-Net paper), AdamW or SGD with Nesterov momentum."""
    name, lr, decay = cfg["optimizer"], cfg["lr"], cfg["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.99, nesterov=True, weight_decay=decay)


def run_identity(cfg: dict, train_ids: list[str], cases) -> str:
    """Identity of a training run: a resume state is only reused for the same settings (but BOOKKEEPING_KEYS),
    training ids and case arrays (`cases`: (image, labels) pairs, training and validation), so new data or
    preprocessing starts afresh."""
    settings = {key: value for key, value in cfg.items() if key not in BOOKKEEPING_KEYS}
    digest = hashlib.blake2b(json.dumps([settings, sorted(train_ids)], sort_keys=True).encode())
    for array in (array for case in cases for array in case):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def refuse_other_device(plan: dict, device: torch.device) -> None:
    """ValueError when a job trains on another kind of device than its plan was made for (a GPU plan on a node
    without a GPU, or the reverse), naming the setting to fix."""
    planned = plan["device"]["type"]
    if planned != device.type:
        raise ValueError(f"the experiment's plan (plan.json) was made for {planned} ({plan['device']['name']}) but "
                         f"this training job runs on {device.type}: give the training jobs the device the plan job had "
                         f"(train.device, and under SLURM the GPU resource, see README 'GPUs, conda, clusters'), or "
                         f"plan again with `--forcerun plan`")


def save_atomic(state: dict, path) -> None:
    """torch.save via a temporary file, so a kill never leaves a half-written checkpoint."""
    tmp = Path(path).with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def model_checkpoint(model, state_dict, patch, epoch: int, val_dice: float, plan: dict) -> dict:
    """What prediction needs: weights, architecture (dims and pooling in the hparams), patch size; and the plan."""
    return dict(model=state_dict, hparams=model.hparams, patch_size=list(patch), epoch=epoch, val_dice=val_dice,
                plan=plan)


class Trainer:
    """One training run, resumable from `state_path`, for the budget the config asks for (unetflow.train.schedule)."""

    def __init__(self, cfg: dict, plan: dict, train_cases, val_cases, train_ids: list[str], state_path: Path, log,
                 regions: Regions | None = None, init_weights: dict | None = None, tracker: Tracker | None = None):
        """Cases are 2D (image (C, H, W), labels (H, W)) or volumes (image (C, D, H, W), labels (D, H, W)), as the
        experiment's `plan` (plan.json) says; `cfg` is the train section with the planned values filled in; with
        `regions` the U-Net (one output per region) learns the regions of the labels; `init_weights`: the weights
        of the plan's train.init package model to start from (`unetflow.train.finetune`); `tracker` receives the
        epochs (none: not tracked). ValueError when this job's device is not the kind the plan was made for."""
        self.val_cases, self.state_path, self.log = val_cases, Path(state_path), log
        self.tracker, self.tracked_before = tracker or Tracker(), None
        torch.manual_seed(cfg["seed"])
        self.device = pick_device(cfg["device"])
        refuse_other_device(plan, self.device)
        self.cfg, self.plan = cfg, plan
        self.patch, self.batch_size = cfg["patch_size"], cfg["batch_size"]
        self.bf16 = uses_bf16(cfg["precision"], self.device)
        self.model = UNet(plan["in_channels"], plan["num_classes"], cfg["depth"], cfg["base_width"], cfg["norm"],
                          cfg["deep_supervision"], cfg["dims"], cfg["pool_kernels"]).to(self.device)
        if init_weights is not None:
            fresh = load_init_weights(self.model, init_weights, plan["init"]["new_head"])
            self.log.info("started from %s (model %s); newly initialised: %s", plan["init"]["package"],
                          plan["init"]["model"], ", ".join(sorted({key.split(".")[0] for key in fresh})) or "nothing")
        self.memory_format = CHANNELS_LAST[cfg["dims"]]
        self.model = self.model.to(memory_format=self.memory_format)  # faster convolutions on CPU and GPU
        self.step_fn = torch.compile(self.model) if cfg["compile"] else self.model
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.budget = training_budget(cfg, self.device.type)
        self.val_subset = validation_subset([image.shape[1:] for image, _ in val_cases], self.patch,
                                            cfg["iterations_per_epoch"], self.batch_size, cfg["val_share"],
                                            cfg["seed"])
        self.val_every = validation_interval(self.subset_tiles(), cfg["iterations_per_epoch"], self.batch_size,
                                             cfg["val_share"])
        self.sampler = PatchSampler(train_cases, self.patch, self.device, cfg["foreground_oversampling"])
        self.sample_rng = torch.Generator().manual_seed(cfg["seed"])
        self.augment_rng = torch.Generator(self.device).manual_seed(cfg["seed"])
        self.regions = None if regions is None else torch.from_numpy(regions.lookup()).float().to(self.device)
        self.identity = run_identity(dict(cfg, regions=regions and asdict(regions), init=plan.get("init")),
                                     train_ids, [*train_cases, *val_cases])  # init: the package's path and SHA-256
        self.epoch, self.step, self.elapsed, self.rows, self.candidates = 0, 0, 0.0, [], []
        self.log.info("device %s (%s), data on %s; %d training and %d validation cases", self.device,
                      "bf16" if self.bf16 else "fp32", self.sampler.storage, len(train_cases), len(val_cases))
        if regions:
            self.log.info("regions %s: one sigmoid output each, loss %s per region (binary cross-entropy for ce)",
                          ", ".join(regions.names), cfg["loss"])
        self.log.info("budget: %s; validation of %d of %d cases every %d epoch(s) (train.val_share %g), all of them "
                      "for the final choice as far as the share allows", self.budget.describe(), len(self.val_subset),
                      len(val_cases), self.val_every, cfg["val_share"])

    def state(self) -> dict:
        return dict(identity=self.identity, epoch=self.epoch, step=self.step, elapsed=self.elapsed, rows=self.rows,
                    candidates=self.candidates, model=self.model.state_dict(),
                    optimizer=self.optimizer.state_dict(), sample_rng=self.sample_rng.get_state(),
                    augment_rng=self.augment_rng.get_state(), tracking=self.tracker.state())

    def try_resume(self) -> None:
        """Continue from the saved state of an interrupted run with the same settings and data, if there is one;
        the training time it had spent counts against a time budget."""
        if not self.state_path.exists():
            return
        state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        if state["identity"] != self.identity:
            self.log.info("ignoring %s: it belongs to other settings or data", self.state_path)
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sample_rng.set_state(state["sample_rng"].cpu())
        self.augment_rng.set_state(state["augment_rng"].cpu())
        self.epoch, self.step, self.elapsed = state["epoch"], state["step"], state["elapsed"]
        self.rows, self.candidates = state["rows"], state["candidates"]
        self.tracked_before = state.get("tracking", {})
        self.log.info("resuming after epoch %d (%d steps, %.1f s spent) from %s; the epochs before:", self.epoch,
                      self.step, self.elapsed, self.state_path)
        for row in self.rows:  # Snakemake removed the interrupted attempt's log
            self.log.info("%s  (before the interruption)", self.epoch_line(row))

    def epoch_line(self, row: dict) -> str:
        """An epoch's metrics row as the log shows it."""
        return (f"epoch {row['epoch']}/{self.budget.epochs(self.cfg['iterations_per_epoch']) or '-'}  "
                f"train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  val_dice {row['val_dice']:.4f}  "
                f"lr {row['lr']:.2e}  {row['seconds']:.1f} s  {row['images_per_s']:.1f} img/s  "
                f"validation {100 * row['val_share']:.0f}%")

    def set_lr(self, clock: Clock) -> float:
        """The scheduled learning rate for the next step, set on the optimiser and returned."""
        cfg = self.cfg
        progress = self.budget.progress(self.step, clock.elapsed())
        lr = cfg["lr"] * lr_factor(self.step, progress, cfg["lr_schedule"], cfg["warmup_iterations"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def augmented_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A sampled, augmented training batch: images (in the model's memory format), labels and loss weights (or
        None)."""
        images, labels, weights = self.sampler.sample_weighted(self.batch_size, self.sample_rng)
        if weights is None:
            images, labels = augment_batch(images, labels, self.cfg["augment"], self.augment_rng,
                                           fill_label=IGNORE_INDEX)
        else:
            images, labels, weights = augment_weighted_batch(images, labels, weights, self.cfg["augment"],
                                                             self.augment_rng, fill_label=IGNORE_INDEX)
        return images.contiguous(memory_format=self.memory_format), labels, weights

    def train_epoch(self, clock: Clock) -> tuple[float, int]:
        """Up to `iterations_per_epoch` optimiser steps, fewer when the budget runs out; the mean loss (synchronised
        once at the end) and the number of steps."""
        cfg, device = self.cfg, self.device
        self.model.train()
        total, steps = torch.zeros((), device=device), 0
        while steps < cfg["iterations_per_epoch"] and not self.budget.spent(self.step, clock.elapsed()):
            self.set_lr(clock)
            images, labels, weights = self.augmented_batch()
            with torch.autocast(device.type, torch.bfloat16, enabled=self.bf16):
                outputs = self.step_fn(images)
            loss_of = deep_supervision_loss if isinstance(outputs, list) else segmentation_loss
            loss = loss_of(outputs, labels, cfg["loss"], weights, self.regions, cfg["dice_background"])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg["grad_clip"])
            self.optimizer.step()
            total += loss.detach()
            steps += 1
            self.step += 1
        return float(total) / max(1, steps), steps

    def run_epoch(self, clock: Clock) -> dict:
        """One epoch and, every `val_every` epochs and after the last, its validation on the subset; its metrics row
        (val_cases 0 and NaN scores for an epoch that did not validate)."""
        start, lr = time.perf_counter(), self.set_lr(clock)
        train_loss, steps = self.train_epoch(clock)
        train_seconds = time.perf_counter() - start
        validates = (self.epoch + 1) % self.val_every == 0 or (self.budget.spent(self.step, clock.elapsed()) and
                                                               end_validation_affordable(self.subset_tiles(), self.step,
                                                                                         self.batch_size))
        cases = [self.val_cases[i] for i in self.val_subset] if validates else []
        val_loss, val_dice = validation_scores(self.model, cases, self.patch, self.device, self.cfg["loss"], self.bf16,
                                               self.regions, self.cfg["dice_background"])
        self.epoch += 1
        seconds = time.perf_counter() - start
        return dict(epoch=self.epoch, steps=self.step, train_loss=train_loss, val_loss=val_loss, val_dice=val_dice,
                    lr=lr, seconds=seconds, images_per_s=steps * self.batch_size / max(train_seconds, 1e-9),
                    val_cases=len(cases), val_seconds=seconds - train_seconds,
                    val_share=(seconds - train_seconds) / seconds)

    def run(self, best_path: Path, last_path: Path) -> pd.DataFrame:
        """Train until the budget is spent (early stopping optional); choose the best checkpoint on the whole
        validation set; write best/last checkpoints; return metrics. The resume state is removed once the
        checkpoints are written: it only outlives an interrupted run."""
        cfg = self.cfg
        self.try_resume()
        self.tracker.start(self.tracked_before)
        clock = Clock(self.elapsed)
        keep = 1 if len(self.val_subset) == len(self.val_cases) else CANDIDATES_KEPT
        while not self.budget.spent(self.step, clock.elapsed()) and not self.should_stop():
            row = self.run_epoch(clock)
            self.rows.append(row)
            self.tracker.log_epoch(row)
            if row["val_cases"] or not self.val_subset:  # an epoch between validations keeps the candidates
                self.candidates = kept_candidates(self.candidates, row["val_dice"], self.epoch, self.model, keep)
            self.log.info("%s  budget %.0f%%", self.epoch_line(row),
                          100 * self.budget.progress(self.step, clock.elapsed()))
            self.elapsed = clock.elapsed()
            if self.epoch % cfg["resume_every"] == 0:
                save_atomic(self.state(), self.state_path)
        self.log.info("trained %d steps in %.1f s; validation took %.1f%% of the epochs' time", self.step,
                      clock.elapsed(), 100 * sum(r["val_seconds"] for r in self.rows)
                      / max(1e-9, sum(r["seconds"] for r in self.rows)))
        if self.val_subset and not any(row["val_cases"] for row in self.rows):
            self.log.warning("no validation within the budget: validating %d case(s) (%d tiles) costs more than the "
                             "%d training steps did, so the last checkpoint is kept without a validation Dice; give "
                             "smaller validation images or a larger budget", len(self.val_subset), self.subset_tiles(),
                             self.step)
        candidates = self.candidates or kept_candidates([], float("nan"), self.epoch, self.model, keep)  # none yet
        best = best_on_full_set(self.model, candidates, self.val_cases, self.patch, self.device, cfg["loss"],
                                self.bf16, self.log, self.affordable_candidates(), self.regions,
                                cfg["dice_background"])
        save_atomic(model_checkpoint(self.model, best["model"], self.patch, best["epoch"], best["dice"], self.plan),
                    best_path)
        last_dice = self.rows[-1]["val_dice"] if self.rows else float("nan")
        save_atomic(model_checkpoint(self.model, self.model.state_dict(), self.patch, self.epoch, last_dice,
                                     self.plan), last_path)
        self.state_path.unlink(missing_ok=True)
        self.log.info("best validation Dice %.4f at epoch %d", best["dice"], best["epoch"])
        peak = peak_memory_bytes(self.device) / 2**30
        self.log.info("peak memory %.2f GiB (%s)", peak,
                      "allocated on the GPU" if self.device.type == "cuda" else "resident, whole process")
        self.tracker.finish(dict(best_val_dice=best["dice"], best_epoch=best["epoch"], epochs=self.epoch,
                                 steps=self.step, train_seconds=clock.elapsed(), peak_memory_gib=peak))
        return pd.DataFrame(self.rows)

    def subset_tiles(self) -> int:
        """Tiles that validating the subset runs through the network."""
        return sum(validation_tiles(self.val_cases[i][0].shape[1:], self.patch) for i in self.val_subset)

    def affordable_candidates(self) -> int:
        """Checkpoints the final choice may compare on the whole validation set within train.val_share."""
        tiles = sum(validation_tiles(image.shape[1:], self.patch) for image, _ in self.val_cases)
        validated = sum(1 for row in self.rows if row["val_cases"])
        return affordable_candidates(tiles, self.subset_tiles(), validated, self.step, self.batch_size,
                                     self.cfg["val_share"])

    def should_stop(self) -> bool:
        """Early stopping: no better validation Dice for `early_stopping` epochs (0 = off; at least the epochs between
        two validations)."""
        patience = self.cfg["early_stopping"]
        best_epoch = max((c["epoch"] for c in self.candidates[:1]), default=0)
        return bool(patience) and self.epoch - best_epoch >= max(patience, self.val_every)
