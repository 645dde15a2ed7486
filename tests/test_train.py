"""Training: schedules, validation, foreground oversampling, and resume after a kill (planning: test_plan.py)."""

import json
import logging
import re
import signal
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO, applied, build_manifest, write_pairs
from unetflow.data.demo_volumes import ellipsoid_volume
from unetflow.data.preprocess import preprocess_sources
from unetflow.io.labels import IGNORE_INDEX
from unetflow.train.sampler import PatchSampler, validation_cases
from unetflow.train.schedule import Budget, lr_factor, training_budget
from unetflow.train.validation import (
    affordable_candidates,
    best_on_full_set,
    kept_candidates,
    validation_interval,
    validation_subset,
    weights_copy,
)


@pytest.mark.parametrize("schedule", ["constant", "poly", "cosine"])
def test_schedules_start_at_one_and_warm_up_linearly(schedule):
    budget = Budget(steps=100)
    assert lr_factor(0, budget.progress(0, 0), schedule, warmup=0) == 1
    assert lr_factor(4, 0, schedule, warmup=10) == pytest.approx(0.5)
    end = lr_factor(99, budget.progress(99, 0), schedule, warmup=0)
    assert end == 1 if schedule == "constant" else end < 0.05


def test_schedule_is_stretched_over_a_time_budget():
    budget = Budget(seconds=600, warmup=10)
    assert budget.progress(step=5000, elapsed=150) == pytest.approx(0.25)  # time counts, not steps
    assert not budget.spent(5000, 599) and budget.spent(1, 600)
    assert lr_factor(5000, budget.progress(5000, 300), "cosine", warmup=10) == pytest.approx(0.5)
    assert lr_factor(3, budget.progress(3, 300), "cosine", warmup=10) == pytest.approx(0.4)  # warm-up in steps


def test_epochs_win_over_budgets_and_budgets_default_per_device():
    cfg = dict(epochs=3, iterations_per_epoch=7, budget_steps=5, budget_minutes=1.5, warmup_iterations=0)
    assert training_budget(cfg, "cpu") == Budget(steps=21)
    assert training_budget({**cfg, "epochs": None}, "cpu") == Budget(steps=5)
    assert training_budget({**cfg, "epochs": None, "budget_steps": None}, "cuda") == Budget(seconds=90)
    unset = {**cfg, "epochs": None, "budget_steps": None, "budget_minutes": None}
    assert training_budget(unset, "cpu") == Budget(seconds=600)
    assert training_budget(unset, "cuda") == Budget(seconds=300)
    assert Budget(steps=200).epochs(10) == 20 and Budget(steps=205).epochs(10) == 21
    assert Budget(seconds=9).epochs(10) is None


def test_validation_subset_is_seeded_and_bounded_by_its_share():
    shapes = [(512, 512)] * 20  # 9 tiles of 256x256 each; an epoch of 10 steps of 4 patches costs 120 forwards
    subset = validation_subset(shapes, [256, 256], steps_per_epoch=10, batch_size=4, share=0.15, seed=0)
    assert subset == validation_subset(shapes, [256, 256], 10, 4, 0.15, seed=0)
    assert len(subset) == 2  # 18 tiles of 138 is 13 %, 27 of 147 would be 18 %
    assert subset != validation_subset(shapes, [256, 256], 10, 4, 0.15, seed=1)
    assert validation_subset(shapes, [256, 256], 10, 4, 1.0, seed=0) == list(range(20))
    assert len(validation_subset(shapes, [256, 256], 1, 1, 0.01, seed=0)) == 1  # at least one case


def test_a_subset_costlier_than_the_share_is_validated_every_few_epochs():
    # an epoch of 10 steps of 4 patches costs 120 forwards; at 10 % validation may cost 13.3 tiles per epoch
    assert validation_interval(10, 10, 4, share=0.1) == 1
    assert validation_interval(1000, 10, 4, share=0.1) == 75  # a large volume: 1000 tiles every 75 epochs is 10 %
    assert validation_interval(1000, 10, 4, share=1.0) == 1


def test_final_choice_compares_only_the_checkpoints_the_share_affords():
    # 100 steps of 4 patches = 1200 forwards; 2 epochs validating a 10-tile subset: 20 tiles
    assert affordable_candidates(120, 10, 2, 100, 4, share=0.1) == 0  # (0.1 * 1220 - 20) / 0.9 = 113 < 120 tiles
    assert affordable_candidates(50, 10, 2, 100, 4, share=0.1) == 2  # 113 // 50
    assert affordable_candidates(10, 10, 2, 100, 4, share=0.1) == 3  # at most CANDIDATES_KEPT
    assert affordable_candidates(10_000, 10, 2, 100, 4, share=1.0) == 3
    model = torch.nn.Linear(2, 2)
    candidates = [dict(dice=0.9, epoch=2, model=weights_copy(model)), dict(dice=0.8, epoch=1, model={})]
    log = logging.getLogger("test")
    assert best_on_full_set(model, candidates, [], [8, 8], "cpu", "ce", False, log, affordable=1) is candidates[0]


def test_candidates_keep_the_best_checkpoints_earliest_first():
    model = torch.nn.Linear(2, 2)
    candidates = []
    for epoch, dice in enumerate([0.5, 0.7, 0.6, 0.7, 0.4], start=1):
        candidates = kept_candidates(candidates, dice, epoch, model, keep=3)
    assert [(c["epoch"], c["dice"]) for c in candidates] == [(2, 0.7), (4, 0.7), (3, 0.6)]
    assert [c["epoch"] for c in kept_candidates(candidates, float("nan"), 6, model, keep=3)] == [6]


@pytest.mark.parametrize("share", [0.0, 0.33, 1.0])
def test_foreground_oversampling_share(share):
    image = np.zeros((1, 256, 256), np.float32)
    labels = np.zeros((256, 256), np.uint8)
    labels[120:124, 40:44] = 1  # a tiny object: random 32x32 patches rarely contain it
    sampler = PatchSampler([(image, labels)], [32, 32], torch.device("cpu"), share)
    generator = torch.Generator().manual_seed(0)
    batches = [sampler.sample(6, generator)[1] for _ in range(100)]
    measured = np.mean([bool((patch > 0).any()) for batch in batches for patch in batch])
    chance = (32 + 3) ** 2 / (256 - 31) ** 2  # a random patch contains the object
    assert measured == pytest.approx(round(share * 6) / 6 + (1 - round(share * 6) / 6) * chance, abs=0.04)


TINY_CFG = dict(device="cpu", seed=3, epochs=5, budget_steps=None, budget_minutes=None, val_share=1.0,
                iterations_per_epoch=6, batch_size=4, dims=2, patch_size=[32, 32], depth=2, pool_kernels=None,
                base_width=8, norm="batch", deep_supervision=False, loss="ce_dice", optimizer="adam", lr=1e-3,
                weight_decay=0.0, lr_schedule="poly", warmup_iterations=2, grad_clip=1.0, foreground_oversampling=0.33,
                dice_background=False, early_stopping=0, resume_every=1, compile=False, augment={}, precision="auto")
TINY_PLAN = dict(device=dict(type="cpu", name="cpu", memory_bytes=None), in_channels=1, num_classes=2)


def tiny_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 48x48 (image, labels) pair whose image is its labels plus noise."""
    labels = (rng.random((48, 48)) > 0.7).astype(np.uint8)
    return (labels[None] + rng.normal(0, 0.5, (1, 48, 48))).astype(np.float32), labels


def tiny_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 10x24x24 (image, labels) volume of ellipsoids in noise."""
    image, labels = ellipsoid_volume((10, 24, 24), (2.0, 1.0, 1.0), rng)
    return image[None], labels


RUNNER = textwrap.dedent(f"""
    import json, logging, sys
    import numpy as np, torch
    sys.path.insert(0, {str(REPO / "tests")!r})
    from test_train import TINY_CFG, TINY_PLAN, tiny_case, tiny_volume
    from unetflow.train.train import Trainer
    torch.set_num_threads(1)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    out, cfg = sys.argv[1], dict(TINY_CFG, **json.loads(sys.argv[2]))
    rng = np.random.default_rng(0)
    make = tiny_volume if cfg.get("dims") == 3 else tiny_case
    train, val = [make(rng) for _ in range(4)], [make(rng) for _ in range(2)]
    if len(sys.argv) > 3:  # a job that resumes where other jobs hold memory: the plan does not change
        import unetflow.gpu, unetflow.train.sampler
        unetflow.gpu.free_memory_bytes = unetflow.train.sampler.free_memory_bytes = lambda device: 2**20
    trainer = Trainer(cfg, TINY_PLAN, train, val, ["a", "b", "c", "d"], out + "/state.pt", logging.getLogger())
    trainer.run(out + "/model.pt", out + "/last.pt").to_parquet(out + "/metrics.parquet")
""")


def start_runner(folder, overrides: dict, little_free_memory: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-c", RUNNER, str(folder), json.dumps(overrides),
                             *(["little free memory"] if little_free_memory else [])],
                            stdout=subprocess.PIPE, text=True, cwd=REPO / "workflow" / "scripts")


# epochs; and a step budget whose last epoch is short, validating a subset of the cases (final choice on all); in 3D
STEP_BUDGET = {"epochs": None, "budget_steps": 27, "val_share": 0.05}
VOLUMES = dict(STEP_BUDGET, dims=3, patch_size=[8, 16, 16], pool_kernels=[[2, 2, 2], [1, 2, 2]])  # as planned


@pytest.mark.parametrize("overrides, validated", [({}, [2] * 5), (STEP_BUDGET, [0, 1, 0, 1, 1]),
                                                  (VOLUMES, [0, 0, 1, 0, 1])])  # at 5 %: every few epochs and last
def test_killed_training_resumes_to_the_same_weights(tmp_path, overrides, validated):
    import pandas as pd

    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    whole.mkdir()
    interrupted.mkdir()
    first = start_runner(interrupted, overrides)
    for line in first.stdout:
        if line.startswith("epoch 2/"):
            first.send_signal(signal.SIGKILL)
            break
    first.wait()
    assert first.returncode == -signal.SIGKILL and not (interrupted / "last.pt").exists()
    resumed = start_runner(interrupted, overrides, little_free_memory=True)  # e.g. on a busier GPU
    resumed_log = resumed.communicate()[0]
    assert "resuming after epoch" in resumed_log
    assert re.search(r"^epoch 1/\S+  train_loss .*\(before the interruption\)$", resumed_log, re.M)  # log kept
    assert start_runner(whole, overrides).wait() == 0 and resumed.returncode == 0

    for name in ("last.pt", "model.pt"):
        a = torch.load(whole / name, weights_only=True)["model"]
        b = torch.load(interrupted / name, weights_only=True)["model"]
        assert all(torch.equal(a[key], b[key]) for key in a), name
    assert not (interrupted / "state.pt").exists()  # a completed run leaves no state to resume from
    metrics = pd.read_parquet(interrupted / "metrics.parquet")
    assert metrics["epoch"].tolist() == [1, 2, 3, 4, 5] and metrics["steps"].iloc[-1] == 30 - 3 * bool(overrides)
    assert metrics["val_cases"].tolist() == validated
    reference = pd.read_parquet(whole / "metrics.parquet")
    assert np.allclose(metrics["val_dice"], reference["val_dice"], equal_nan=True)


def test_a_large_validation_case_is_validated_every_few_epochs_and_the_best_is_a_validated_one(tmp_path):
    import logging

    from unetflow.train.train import Trainer

    rng = np.random.default_rng(0)
    labels = (rng.random((128, 128)) > 0.7).astype(np.uint8)  # 49 tiles; an epoch trains 6 x 4 patches (72 forwards)
    large = ((labels[None] + rng.normal(0, 0.5, (1, 128, 128))).astype(np.float32), labels)
    cfg = dict(TINY_CFG, epochs=7, val_share=0.25)  # 49 tiles every 3 epochs: 16.3 of 72 + 16.3 tiles per epoch
    trainer = Trainer(cfg, TINY_PLAN, [tiny_case(rng) for _ in range(4)], [large], list("abcd"), tmp_path / "s.pt",
                      logging.getLogger())
    metrics = trainer.run(tmp_path / "model.pt", tmp_path / "last.pt")
    assert metrics["val_cases"].tolist() == [0, 0, 1, 0, 0, 1, 1]  # and after the last epoch
    assert metrics["val_dice"].isna().tolist() == [True, True, False, True, True, False, False]
    assert torch.load(tmp_path / "model.pt", weights_only=True)["epoch"] in (3, 6, 7)
    huge = ((labels[None] + rng.normal(0, 0.5, (1, 128, 128))).astype(np.float32).repeat(8, 1).repeat(8, 2),
            labels.repeat(8, 0).repeat(8, 1))  # 3969 tiles: more than 2 epochs train (144 forwards)
    trainer = Trainer(dict(cfg, epochs=2), TINY_PLAN, [tiny_case(rng) for _ in range(4)], [huge], list("abcd"),
                      tmp_path / "h.pt", logging.getLogger())
    assert trainer.run(tmp_path / "huge.pt", tmp_path / "huge_last.pt")["val_cases"].tolist() == [0, 0]


def test_resume_state_of_other_data_is_ignored_and_of_another_saving_cadence_reused(tmp_path, caplog):
    import logging

    from unetflow.train.train import Trainer, save_atomic

    rng = np.random.default_rng(0)
    train, val = [tiny_case(rng) for _ in range(4)], [tiny_case(rng) for _ in range(2)]
    state = tmp_path / "state.pt"
    save_atomic(Trainer(TINY_CFG, TINY_PLAN, train, val, list("abcd"), state, logging.getLogger()).state(), state)
    changed = [(image, 1 - labels) for image, labels in train]  # the same ids, other masks
    with caplog.at_level(logging.INFO):
        Trainer(TINY_CFG, TINY_PLAN, changed, val, list("abcd"), state, logging.getLogger()).try_resume()
        assert "belongs to other settings or data" in caplog.text
        Trainer(dict(TINY_CFG, resume_every=3), TINY_PLAN, train, val, list("abcd"), state,
                logging.getLogger()).try_resume()  # the same run, its state saved less often
        assert "resuming after epoch 0" in caplog.text


def test_sampler_keeps_cases_compact_and_yields_float32_and_int64_batches():
    image = np.random.default_rng(0).normal(size=(1, 64, 64)).astype(np.float16)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:20, 30:40] = 1
    sampler = PatchSampler([(image, labels), (image[:, :20, :24], labels[:20, :24])], [32, 32], torch.device("cpu"),
                           foreground_share=1.0)
    assert sampler.images[0].dtype == torch.float16 and sampler.labels[0].dtype == torch.uint8
    assert sampler.images[0].data_ptr() == image.ctypes.data  # large enough: kept without a copy
    assert sampler.labels[1].shape == (32, 32)  # smaller than the patch: padded
    images, targets = sampler.sample(4, torch.Generator().manual_seed(0))
    assert images.dtype == torch.float32 and targets.dtype == torch.int64 and images.shape == (4, 1, 32, 32)
    assert all(bool((patch == 1).any()) for patch in targets)  # every patch centred on foreground


class TickingClock:
    """A stand-in for unetflow.train.schedule.Clock that advances 10 ms each time it is read: time budgets become
    deterministic, whatever the load of the machine."""

    def __init__(self, before: float = 0.0):
        self.now = before

    def elapsed(self) -> float:
        self.now += 0.01
        return self.now


def test_time_budget_trains_until_spent_and_counts_the_time_before_a_resume(tmp_path, monkeypatch):
    import logging

    from unetflow.train.train import Trainer, save_atomic

    monkeypatch.setattr("unetflow.train.train.Clock", TickingClock)
    rng = np.random.default_rng(0)
    train, val = [tiny_case(rng) for _ in range(4)], [tiny_case(rng) for _ in range(2)]
    cfg = dict(TINY_CFG, epochs=None, budget_minutes=0.01, lr_schedule="poly", warmup_iterations=0)  # 0.6 s
    fresh = Trainer(cfg, TINY_PLAN, train, val, list("abcd"), tmp_path / "fresh.pt", logging.getLogger())
    metrics = fresh.run(tmp_path / "model.pt", tmp_path / "last.pt")
    assert fresh.elapsed >= 0.6 and fresh.step == metrics["steps"].iloc[-1] > 12
    assert (np.diff(metrics["lr"]) < 0).all()  # the poly schedule runs over the time, not over epochs
    state = tmp_path / "state.pt"
    interrupted = Trainer(cfg, TINY_PLAN, train, val, list("abcd"), state, logging.getLogger())
    interrupted.elapsed = 0.3  # an interrupted run that had spent half the budget
    save_atomic(interrupted.state(), state)
    resumed = Trainer(cfg, TINY_PLAN, train, val, list("abcd"), state, logging.getLogger())
    resumed.run(tmp_path / "model2.pt", tmp_path / "last2.pt")
    assert resumed.elapsed >= 0.6 and 0.4 < resumed.step / fresh.step < 0.6


def test_a_job_on_another_kind_of_device_than_its_plan_is_refused(tmp_path):
    import logging

    from unetflow.train.train import Trainer

    rng = np.random.default_rng(0)
    gpu_plan = dict(TINY_PLAN, device=dict(type="cuda", name="NVIDIA H100", memory_bytes=80 * 2**30))
    with pytest.raises(ValueError, match=r"plan \(plan.json\) was made for cuda \(NVIDIA H100\).*runs on cpu"):
        Trainer(TINY_CFG, gpu_plan, [tiny_case(rng)], [], ["a"], tmp_path / "state.pt", logging.getLogger())


def test_validation_scores_inside_the_region_of_interest_only(tmp_path):
    images, masks = write_pairs(tmp_path, count=2)
    (tmp_path / "fov").mkdir()
    fov = np.zeros((32, 40), np.uint8)
    fov[:, :25] = 255  # the field of view: the left part
    for index in range(2):
        cv2.imwrite(str(tmp_path / "fov" / f"c{index}.png"), fov)
    for rois, outside in ((None, False), (str(tmp_path / "fov"), True)):
        manifest, classes = build_manifest(str(images), str(masks), rois=rois)
        table = preprocess_sources(manifest, classes, str(tmp_path / f"arrays{outside}"), applied("zscore"))
        for (_, labels), stored in zip(validation_cases(table, ["c0", "c1"], dims=2), table["array_path"]):
            stored_labels = np.load(f"{stored}/labels.npy")[0]  # trained on whole images
            assert (labels[:, 25:] == IGNORE_INDEX).all() == outside and IGNORE_INDEX not in stored_labels
            np.testing.assert_array_equal(labels[:, :25], stored_labels[:, :25])
