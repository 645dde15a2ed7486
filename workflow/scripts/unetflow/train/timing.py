"""How long a training step of a planned network takes on this machine: the plan weighs the resolution of 2D data
against a time budget with it (`unetflow.plan.resolution`)."""

import logging
import os
import time

import numpy as np

from unetflow.train.schedule import Clock
from unetflow.train.train import Trainer

TIMED_STEPS = 3  # after one untimed warm-up step
STEP_SETTINGS = dict(seed=0, epochs=None, budget_minutes=None, val_share=1.0, iterations_per_epoch=1, optimizer="adam",
                     lr=1e-3, weight_decay=0.0, lr_schedule="constant", warmup_iterations=0, grad_clip=0,
                     early_stopping=0, resume_every=1, compile=False)  # what does not change a step's time


def step_seconds(cfg: dict, plan: dict) -> float:
    """Median seconds of one training step (sampling, augmentation, forward, backward, optimiser) of the network
    `cfg` describes (a train section with the planned values: dims, patch_size, depth, pool_kernels, base_width,
    batch_size, norm, deep_supervision, loss, augment, precision, device), on synthetic cases of the patch size;
    `plan`: device, in_channels and num_classes."""
    rng, patch = np.random.default_rng(0), cfg["patch_size"]
    cases = [(rng.normal(size=(plan["in_channels"], *patch)).astype(np.float16),
              rng.integers(0, plan["num_classes"], patch).astype(np.uint8)) for _ in range(2)]
    settings = {**cfg, **STEP_SETTINGS, "budget_steps": TIMED_STEPS + 1, "foreground_oversampling": 0.33}
    silent = logging.getLogger("unetflow.train.timing")
    silent.propagate = False
    trainer = Trainer(settings, plan, cases, [], ["timing"], os.devnull, silent)
    clock, seconds = Clock(), []
    for _ in range(TIMED_STEPS + 1):
        start = time.perf_counter()
        trainer.train_epoch(clock)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[1:]))
