"""3D training (train.dims): the 2D-or-3D rule, volumes stored whole (resampled in preprocessing, read by training
as they are, no header read), the 3D plan, 3D patches and their augmentation, and a tiny 3D U-Net that learns
ellipsoids on the CPU."""

import logging
import re

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import applied, build_manifest, write_pairs
from unetflow.config import experiment_problems
from unetflow.data.demo_volumes import ellipsoid_volume, write_volume_pairs
from unetflow.data.preprocess import preprocess_sources
from unetflow.io import nifti
from unetflow.io.labels import IGNORE_INDEX
from unetflow.plan.plan import CPU_PATCH_VOXELS_3D, PlanError, choose_dims, planned_settings, training_traits
from unetflow.train.augment import AUGMENT_DEFAULTS, augment_batch
from unetflow.train.sampler import PatchSampler, training_cases
from unetflow.train.train import Trainer

CPU = dict(type="cpu", name="cpu", memory_bytes=None)


def volume_manifest(folder, shape, spacing, count: int = 2):
    """The ingest manifest and class table of `count` generated ellipsoid volumes ((X, Y, Z) shape and spacing)."""
    images, masks = write_volume_pairs(folder, count, shape, spacing)
    return build_manifest(images, masks)


def stored_sources(folder, shape=None, spacing=None, count: int = 2, target=None, manifest=None):
    """The preprocess table of generated volumes (or of an ingest `manifest`), resampled to `target` (x, y, z)."""
    if manifest is None:
        manifest, classes = volume_manifest(folder, shape, spacing, count)
    else:
        manifest, classes = manifest
    return preprocess_sources(manifest, classes, str(folder / "arrays"), applied("zscore", spacing=target))


@pytest.mark.parametrize("shape, spacing, dims", [
    ((24, 20, 12), (1.0, 1.0, 1.2), 3),  # isotropic enough
    ((24, 20, 10), (0.5, 0.5, 4.0), 2),  # ratio 8 and 10 slices along the coarse axis: extremely anisotropic
    ((24, 20, 40), (0.5, 0.5, 4.0), 3),  # as anisotropic, but 40 slices
    ((10, 20, 24), (4.0, 0.5, 0.5), 2),  # the coarse axis need not be the slice axis
])
def test_auto_dims_follows_the_spacing_rule(tmp_path, shape, spacing, dims):
    sources = stored_sources(tmp_path, shape, spacing)
    chosen, reason = choose_dims("auto", sources)
    assert chosen == dims and "spacing ratio" in reason
    assert choose_dims(2, sources)[0] == 2 and choose_dims(3, sources)[0] == 3  # explicit wins
    assert choose_dims("auto", sources, [32, 32]) == (2, "train.patch_size has 2 sides")  # so does a patch
    assert choose_dims("auto", sources, [8, 16, 16]) == (3, "train.patch_size has 3 sides")


def test_3d_is_refused_for_2d_data_and_one_slice_volumes_naming_the_key(tmp_path):
    flat = stored_sources(tmp_path / "png", manifest=build_manifest(*write_pairs(tmp_path / "png")))
    assert choose_dims("auto", flat)[0] == 2
    with pytest.raises(PlanError, match="train.dims is 3 but the training data holds 4 2D image.* save TIFF stacks "
                                        r"as NIfTI volumes with their voxel size \(nibabel"):
        choose_dims(3, flat)
    with pytest.raises(ValueError, match="train.patch_size has 3 sides but the training data holds 4 2D image"):
        choose_dims("auto", flat, [8, 16, 16])
    single = stored_sources(tmp_path / "nii", (20, 16, 1), (1.0, 1.0, 1.0))
    assert choose_dims("auto", single) == (
        2, "the training data holds 2 2D image(s), TIFF stack(s) or one-slice volume(s), e.g. ['vol0', 'vol1']")
    with pytest.raises(ValueError, match="train.dims is 3 .* one-slice volume"):
        choose_dims(3, single)


@pytest.mark.parametrize("dims, patch, problem", [
    (3, [8, 64, 64], None), ("auto", [12, 40, 40], None),  # 3D sides need not be multiples of 2**depth
    (2, [8, 64, 64], "has 3 sides but train.dims is 2"), (3, [64, 64], "has 2 sides but train.dims is 3"),
    ("auto", [60, 64], "must be a multiple of 2\\*\\*train.depth = 8"),
])
def test_config_refuses_patch_sides_that_do_not_fit_train_dims(dims, patch, problem):
    train = dict(dims=dims, patch_size=patch, depth=3, epochs=None, budget_steps=None, budget_minutes=None)
    settings = dict(train=train, predict=dict(split="test", ensemble=[]))
    problems = experiment_problems("unet", settings, dict(experiments={"unet": {}}, predict=dict(split="test")))
    assert problems == [] if problem is None else len(problems) == 1 and re.search(problem, problems[0])


def test_training_reads_the_stored_volumes_whole_or_slice_by_slice_without_reading_a_header(tmp_path, monkeypatch):
    manifest, classes = volume_manifest(tmp_path, (12, 10, 7), (1.0, 1.0, 2.0), count=3)
    stored = stored_sources(tmp_path, manifest=(manifest, classes))
    reads, opened = [], nifti._open
    monkeypatch.setattr(nifti, "_open", lambda path: reads.append(str(path)) or opened(path))
    (image, labels), _ = training_cases(stored, ["vol0", "vol2"], dims=3)
    mask = np.asarray(nib.load(tmp_path / "masks" / "vol0.nii.gz").dataobj)
    assert image.shape == (1, 7, 12, 10) and image.dtype == np.float16 and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.moveaxis(mask, 2, 0))  # (Z, Y, X): slices along data.slice_axis
    slices = training_cases(stored, ["vol1"], dims=2)
    assert len(slices) == 7 and slices[3][0].shape == (1, 12, 10) and slices[3][1].shape == (12, 10)
    assert reads == []  # nothing resampled or measured at load: preprocessing did it once
    traits = training_traits(stored, 3, dict(object_diameter_p90=4.0))
    assert traits["spacing"] == [2.0, 1.0, 1.0] and traits["median_size"] == [7, 12, 10]  # slice axis first


def test_volumes_are_stored_resampled_along_the_slice_axis_to_the_target_spacing(tmp_path):
    """0.8 x 0.8 x 3 mm volumes sliced along Z, target 0.8 x 0.8 x 1.2 mm: each volume is stored on 20 slices
    instead of 8 (8 x 3 / 1.2), its labels hold only their own classes and match the file's labels at each new
    slice's centre, and the plan sees the resampled spacing."""
    stored = stored_sources(tmp_path, (24, 20, 8), (0.8, 0.8, 3.0), target=[0.8, 0.8, 1.2])
    (image, labels), = training_cases(stored, ["vol0"], dims=3)
    assert image.shape == (1, 20, 24, 20) and image.dtype == np.float16 and labels.shape == (20, 24, 20)
    assert training_traits(stored, 3, dict(object_diameter_p90=4.0))["spacing"] == pytest.approx([1.2, 0.8, 0.8])
    mask = np.moveaxis(np.asarray(nib.load(tmp_path / "masks" / "vol0.nii.gz").dataobj), 2, 0)
    assert set(np.unique(labels)) == set(np.unique(mask)) == {0, 1}
    nearest = mask[((np.arange(20) + 0.5) * 1.2 / 3.0).astype(int)]  # the file's slice under each new centre
    assert (labels == nearest).mean() > 0.97  # (new centres on an old boundary keep the two slices' overlap)


UNSET = dict(dims="auto", patch_size=None, depth=None, base_width=None, batch_size=None, foreground_oversampling=None,
             dice_background="auto")
CT_LIKE = dict(cases=10, median_size=[40, 160, 160], spacing=[3.0, 1.0, 1.0], class_shares=[0.9, 0.06, 0.04],
               object_diameter_p90=30.0)


def test_3d_plan_fits_the_cpu_and_pools_the_coarse_axis_late():
    planned, reasons = planned_settings(dict(UNSET), CT_LIKE, 3, "NIfTI volumes", CPU)
    patch, kernels = planned["patch_size"], planned["pool_kernels"]
    assert planned["dims"] == 3 and reasons["dims"] == "NIfTI volumes"
    assert np.prod(patch) <= CPU_PATCH_VOXELS_3D and patch[0] < min(patch[1:])  # the long physical axis shrank
    millimetres = np.array(patch) * CT_LIKE["spacing"]
    assert millimetres.max() <= 1.25 * millimetres.min()  # near-isotropic in mm
    assert kernels[0] == [1, 2, 2] and [2, 2, 2] in kernels and len(kernels) == planned["depth"]
    assert all(side % np.prod(axis) == 0 for side, axis in zip(patch, zip(*kernels)))
    assert planned["batch_size"] == 2 and set(reasons) == set(UNSET) | {"pool_kernels"}


def test_3d_patches_are_sampled_padded_and_centred_on_foreground():
    image = np.random.default_rng(0).normal(size=(1, 6, 40, 40)).astype(np.float16)
    labels = np.zeros((6, 40, 40), np.uint8)
    labels[2:4, 30:33, 5:8] = 2
    sampler = PatchSampler([(image, labels)], [8, 16, 16], torch.device("cpu"), foreground_share=1.0)
    assert sampler.labels[0].shape == (8, 40, 40)  # 6 slices padded up to the patch's 8
    images, targets = sampler.sample(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 16, 16) and targets.shape == (3, 8, 16, 16)
    assert all(int((patch == 2).sum()) == 2 * 3 * 3 for patch in targets)  # the whole small object in every patch


def test_3d_augmentation_keeps_shapes_and_labels_and_moves_all_slices_alike():
    torch.manual_seed(0)
    plane = F.interpolate(torch.randint(0, 3, (4, 1, 6, 6)).float(), size=(24, 24), mode="nearest").long()
    labels = plane.expand(4, 6, 24, 24).clone()  # constant along the slice axis
    images = labels[:, None].float() + 0.1 * torch.randn(4, 1, 6, 24, 24)
    every = {name: {"p": 1.0} for name in AUGMENT_DEFAULTS}
    out_images, out_labels = augment_batch(images, labels, {**every, "mirror": {"p": 0.0}},
                                           torch.Generator().manual_seed(1), fill_label=IGNORE_INDEX)
    assert out_images.shape == images.shape and out_labels.shape == labels.shape and out_labels.dtype == torch.int64
    assert set(out_labels.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}
    assert (out_labels == out_labels[:, :1]).all()  # in-plane transforms: every slice moved the same way
    assert not torch.equal(out_labels, labels)
    flipped_images, flipped = augment_batch(images, labels, {name: {"p": float(name == "mirror")}
                                                             for name in AUGMENT_DEFAULTS},
                                            torch.Generator().manual_seed(1))
    torch.testing.assert_close(flipped_images, images.flip(2, 3, 4))  # p = 1: flipped along all three axes
    assert torch.equal(flipped, labels.flip(1, 2, 3))


TINY_3D = dict(device="cpu", seed=0, epochs=4, budget_steps=None, budget_minutes=None, val_share=1.0,
               iterations_per_epoch=8, batch_size=2, patch_size=[8, 32, 32], depth=2, base_width=8, norm="batch",
               deep_supervision=True, loss="ce_dice", optimizer="adam", lr=1e-2, weight_decay=0.0,
               lr_schedule="poly", warmup_iterations=0, grad_clip=1.0, foreground_oversampling=0.33, early_stopping=0,
               dice_background="auto", resume_every=1, compile=False, augment={}, precision="auto", dims=3)


def test_a_tiny_3d_unet_learns_ellipsoids_on_the_cpu(tmp_path):
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    volumes = [ellipsoid_volume((12, 32, 32), (3.0, 1.0, 1.0), rng) for _ in range(6)]
    cases = [(image[None].astype(np.float16), labels) for image, labels in volumes]
    traits = dict(median_size=[12, 32, 32], spacing=[3.0, 1.0, 1.0], class_shares=[0.8, 0.2])
    planned, reasons = planned_settings(TINY_3D, traits, 3, None, CPU)
    plan = dict(device=CPU, in_channels=1, num_classes=2, settings={key: dict(value=value) for key, value in
                                                                     planned.items()})
    trainer = Trainer({**TINY_3D, **planned}, plan, cases[:4], cases[4:], list("abcd"), tmp_path / "state.pt",
                      logging.getLogger())
    metrics = trainer.run(tmp_path / "model.pt", tmp_path / "last.pt")
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["hparams"]["dims"] == 3 and checkpoint["patch_size"] == [8, 32, 32]
    assert checkpoint["plan"]["settings"]["pool_kernels"]["value"] == [[1, 2, 2], [2, 2, 2]]
    foreground = np.mean([labels.mean() for _, labels in cases[4:]])
    assert checkpoint["val_dice"] > 0.8 > 2 * foreground  # chance (all foreground) scores 2f / (1 + f)
    assert metrics["val_dice"].iloc[-1] > metrics["val_dice"].iloc[0]
