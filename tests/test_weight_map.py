"""The instance target `weight_map` (U-Net paper, eq. 2): touching objects separated, border weights on a hand-made
case and against a whole-image computation, weighted loss, weights moved with the labels (2D and 3D), volumes
stored with their slices' weights and resampled with them, objects from the target."""

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from unetflow.data.demo_cells import render_touching_cells
from unetflow.evaluate.object_metrics import object_metrics
from unetflow.instances.objects import NECK_SHARE, instances_from_separated_foreground
from unetflow.instances.targets import touching_pairs
from unetflow.instances.weight_map import SIGMA, W0, border_weight_map, separated_objects
from unetflow.io.store import load_array, save_source
from unetflow.train.augment import augment_batch, augment_weighted_batch
from unetflow.train.losses import deep_supervision_loss, segmentation_loss
from unetflow.train.sampler import PatchSampler, training_cases


def touching_squares() -> np.ndarray:
    """Two 10x10 squares sharing an edge (rows 10..19, columns 10..19 and 20..29) in a 30x50 image."""
    ids = np.zeros((30, 50), np.uint16)
    ids[10:20, 10:20], ids[10:20, 20:30] = 1, 2
    return ids


def test_touching_objects_are_separated_by_a_gap():
    ids = touching_squares()
    ids[2:5, 40:45] = 3  # a lone object stays whole
    separated = separated_objects(ids)
    assert (separated[10:20, 19:21] == 0).all()  # one column off each square where they touch
    assert (separated[10:20, 10:19] == 1).all() and (separated[10:20, 21:30] == 2).all()
    assert (separated[2:5, 40:45] == 3).all()


def test_weights_peak_on_the_gap_between_touching_squares():
    ids = touching_squares()
    target, weights = border_weight_map(ids)
    assert weights.dtype == np.float16
    foreground = int(target.sum())
    assert foreground == 2 * 10 * 9
    background_weight, object_weight = 1.0, (ids.size - foreground) / foreground  # the rarer class is upweighted
    gap = weights[10:20, 19:21].astype(np.float32)
    # a gap pixel is 1 px from the nearer square and 2 px from the other one
    assert gap == pytest.approx(np.full(gap.shape, background_weight + W0 * math.exp(-9 / (2 * SIGMA**2))), rel=1e-3)
    assert weights.max() == weights[10:20, 19:21].max()  # the peak is on the gap
    assert weights[0, 0] == background_weight  # far from every object: w_c only
    assert weights[15, 15] == pytest.approx(object_weight, rel=1e-3)  # inside an object: w_c only
    assert weights[15, 5] < weights[15, 19] / 2  # beside one object only: no second object nearby


def brute_force_weights(ids: np.ndarray) -> np.ndarray:
    """The border term on whole-image distance transforms of every object (no windows), on background pixels."""
    separated = separated_objects(ids)
    distances = np.sort([ndimage.distance_transform_edt(separated != i) for i in np.unique(separated) if i], axis=0)
    border = W0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * SIGMA**2))
    return np.where(separated == 0, border, 0)


def test_windowed_weights_equal_whole_image_distances():
    _, ids = render_touching_cells(np.random.default_rng(2), 96)
    target, weights = border_weight_map(ids)
    class_part = np.where(target > 0, weights[target > 0].min(), weights[target == 0].min())
    expected = brute_force_weights(ids) + class_part
    assert np.abs(weights.astype(np.float32) - expected).max() < 0.01


@pytest.mark.parametrize("shape", [(8, 8), (4, 8, 8)], ids=["2d", "3d"])
def test_loss_with_unit_weights_is_the_unweighted_loss(shape):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, *shape, generator=generator)
    labels = torch.randint(0, 2, (2, *shape), generator=generator)
    labels[(0,) * (1 + len(shape))] = 255  # ignored
    ones = torch.ones(2, *shape)
    for kind in ("ce", "ce_dice", "dice"):
        assert segmentation_loss(logits, labels, kind, ones) == pytest.approx(segmentation_loss(logits, labels, kind))
    ce = segmentation_loss(logits, labels, "ce")
    assert segmentation_loss(logits, labels, "ce", 3 * ones) == pytest.approx(3 * ce)
    dice = segmentation_loss(logits, labels, "dice")
    assert segmentation_loss(logits, labels, "dice", 3 * ones) == pytest.approx(dice)  # Dice is not weighted
    only_first = torch.zeros(2, *shape)
    pixel = (0, *[1] * len(shape))
    only_first[pixel] = labels.numel() - 1  # all the weight on one pixel: the CE of that pixel
    single = torch.nn.functional.cross_entropy(logits[(0, slice(None), *pixel[1:])][None], labels[pixel][None])
    assert segmentation_loss(logits, labels, "ce", only_first) == pytest.approx(single.item(), rel=1e-5)
    outputs = [logits, logits[..., ::2, ::2]]
    assert deep_supervision_loss(outputs, labels, "ce_dice", ones) == pytest.approx(
        deep_supervision_loss(outputs, labels, "ce_dice"))


@pytest.mark.parametrize("shape", [(32, 32), (4, 32, 32)], ids=["2d", "3d"])
def test_weights_move_with_the_labels(shape):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 1, *shape, generator=generator)
    labels = torch.randint(0, 5, (6, *shape), generator=generator)
    weights = labels.float() * 10 + 1  # a weight that names its label
    config = {"affine": {"p": 1.0}, "elastic": {"p": 1.0}, "mirror": {"p": 0.5}, "rot90": {"p": 0.5}}
    out_images, out_labels, out_weights = augment_weighted_batch(images, labels, weights, config,
                                                                 torch.Generator().manual_seed(1), fill_label=255)
    plain_images, plain_labels = augment_batch(images, labels, config, torch.Generator().manual_seed(1), fill_label=255)
    assert torch.equal(out_images, plain_images) and torch.equal(out_labels, plain_labels)
    inside = out_labels != 255
    assert inside.float().mean() > 0.3 and not torch.equal(out_labels, labels)
    assert torch.equal(out_weights[inside], out_labels[inside].float() * 10 + 1)
    assert (out_weights[~inside] == 0).all()


def test_sampler_crops_weights_with_labels():
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(3):
        labels = rng.integers(0, 2, (20, 24)).astype(np.uint8)
        cases.append((rng.normal(size=(1, 20, 24)).astype(np.float16), labels, (labels * 5 + 1).astype(np.float16)))
    sampler = PatchSampler(cases, [16, 16], torch.device("cpu"), 0.5)
    images, labels, weights = sampler.sample_weighted(8, torch.Generator().manual_seed(0))
    assert weights.shape == labels.shape == (8, 16, 16) and torch.equal(weights, labels.float() * 5 + 1)
    assert PatchSampler([case[:2] for case in cases], [16, 16], torch.device("cpu"), 0.5).sample_weighted(
        2, torch.Generator())[2] is None


def test_3d_training_volumes_carry_their_slices_weights_cropped_with_the_labels(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (5, 12, 10)).astype(np.uint8)
    weights = (labels * 5 + 1 + np.arange(5)[:, None, None]).astype(np.float16)  # names its slice and label
    path = save_source(tmp_path, "v", rng.normal(size=(1, 5, 12, 10)), labels, weights=weights)
    table = pd.DataFrame([dict(id="v", array_path=str(path))])
    (image, stored_labels, stored_weights), = training_cases(table, ["v"], dims=3, weights=True)
    assert image.shape == (1, 5, 12, 10) and stored_weights.shape == stored_labels.shape == (5, 12, 10)
    np.testing.assert_array_equal(stored_weights, labels * 5 + 1 + np.arange(5)[:, None, None])
    assert len(training_cases(table, ["v"], dims=3)[0]) == 2  # validation: no weights
    assert [case[2][0, 0] for case in training_cases(table, ["v"], dims=2, weights=True)] == list(weights[:, 0, 0])
    sampler = PatchSampler([(image, stored_labels, stored_weights)], [3, 8, 8], torch.device("cpu"), 0.5)
    _, patches, patch_weights = sampler.sample_weighted(6, torch.Generator().manual_seed(0))
    assert patch_weights.shape == patches.shape == (6, 3, 8, 8)
    offsets = patch_weights - patches.float() * 5 - 1  # the slice index of every voxel: whole slices kept together
    assert (offsets == offsets[..., :1, :1]).all() and not (offsets == 0).all()


def test_preprocessing_resamples_the_weights_and_ids_along_the_slice_axis_with_the_labels(tmp_path):
    """Four 2 mm slices on a 1 mm target: eight slices, each taking its ids and weights (nearest) and its labels
    (largest share) from the slice of the file under its centre."""
    from conftest import applied, build_manifest
    from unetflow.data.preprocess import preprocess_source

    ids = np.zeros((12, 10, 4), np.uint16)
    for index in range(4):
        ids[2 + index:8 + index, 2:7, index] = index + 1  # one object per slice, moving down
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    nib.save(nib.Nifti1Image(ids.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "images" / "v.nii.gz")
    nib.save(nib.Nifti1Image(ids, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "masks" / "v.nii.gz")
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"), instances=True)
    row = preprocess_source(manifest.iloc[0].to_dict(), classes, str(tmp_path / "arrays"),
                            applied("zscore", spacing=[1.0, 1.0, 1.0], weight_map={"w0": W0, "sigma": SIGMA}))
    weights, stored_ids = load_array(row["array_path"], "weights"), load_array(row["array_path"], "instances")
    labels = load_array(row["array_path"], "labels")
    assert weights.shape == stored_ids.shape == labels.shape == (8, 12, 10)
    for index in range(4):
        target, expected = border_weight_map(ids[..., index])
        for stored in (2 * index, 2 * index + 1):
            np.testing.assert_array_equal(weights[stored], expected)
            np.testing.assert_array_equal(stored_ids[stored], ids[..., index])
            np.testing.assert_array_equal(labels[stored], target)


def discs(*centres, radius=8, shape=(40, 64)) -> np.ndarray:
    """A foreground mask of discs of `radius` at `centres` (y, x)."""
    y, x = np.indices(shape)
    return np.any([(y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2 for cy, cx in centres], axis=0)


def test_two_round_objects_joined_by_a_missed_gap_are_two_an_elongated_one_is_one():
    for foreground, expected in ((discs((20, 20), (20, 34)), 2),  # overlapping discs: a waist 10 px wide
                                 (discs(*[(20, x) for x in range(16, 49)], radius=6), 1)):  # a 45 x 13 px capsule
        found = instances_from_separated_foreground(np.stack([~foreground, foreground]).astype(np.float32), 1)
        assert found.max() == expected and (found[foreground] > 0).all()


def test_a_higher_object_probability_separates_two_objects_whose_gap_was_found_only_in_part():
    foreground = np.zeros((30, 41), bool)
    foreground[5:25, 5:36] = True  # two 20 x 15 px objects either side of column 20, their gap half found:
    background = np.where(foreground, 0.05, 0.95).astype(np.float32)
    background[5:25, 20] = 0.45  # the network leans to foreground there, unsure
    probs = np.stack([background, 1 - background])
    assert instances_from_separated_foreground(probs, 1, object_probability=0.6).max() == 2
    assert instances_from_separated_foreground(probs, 1).max() == 1  # at the default object probability 0.5: one


def ragged_rods(count: int, seed: int = 1) -> list[np.ndarray]:
    """Foreground masks of one long object each: ellipses 4x as long as wide, short radius 60 px, ragged outlines."""
    rng, (y, x) = np.random.default_rng(seed), np.indices((320, 320))
    masks = []
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        u = (x - 160) * np.cos(angle) + (y - 160) * np.sin(angle)
        v = (y - 160) * np.cos(angle) - (x - 160) * np.sin(angle)
        theta = np.arctan2(4 * v, u)
        wobble = sum(rng.normal(0, 0.05) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 8))
        masks.append(np.hypot(u / 4, v) <= 60 * (1 + wobble))
    return masks


def test_a_long_ragged_object_with_several_peaks_stays_one():
    counts = {share: [instances_from_separated_foreground(np.stack([~rod, rod]).astype(np.float32), 16,
                                                          share=share).max() for rod in ragged_rods(6)]
              for share in (NECK_SHARE, np.inf)}
    assert counts[NECK_SHARE] == [1] * 6 and max(counts[np.inf]) > 1  # without merging some split at a ridge peak


def test_objects_from_the_target_recover_the_cells():
    _, ids = render_touching_cells(np.random.default_rng(0), 128)
    target, _ = border_weight_map(ids)
    found = instances_from_separated_foreground(np.stack([1 - target, target]).astype(np.float32), min_size=1)
    scores = object_metrics(ids, found)
    assert scores["object_f1"] > 0.95
    cut = object_metrics(ids, ndimage.label(target, np.ones((3, 3)))[0])  # the objects with their gaps
    assert cut["object_f1"] > 0.95 and scores["matched_iou"] > cut["matched_iou"] + 0.02  # the gaps given back


def test_objects_found_in_a_noisy_prediction_are_each_one_piece():
    rng = np.random.default_rng(0)
    split = 0
    for seed in range(3):
        _, ids = render_touching_cells(np.random.default_rng(seed), 256)
        target, _ = border_weight_map(ids)  # gaps cut between touching cells, then blurred and noisy as predicted
        blurred = np.clip(ndimage.gaussian_filter(target.astype(float), 1) + rng.normal(0, 0.15, ids.shape), 0, 1)
        found = instances_from_separated_foreground(np.stack([1 - blurred, blurred]).astype(np.float32), 10)
        assert touching_pairs(found) > 0.5 * touching_pairs(ids)  # the gaps filled
        split += sum(ndimage.label(found == index)[1] > 1 for index in range(1, found.max() + 1))
    assert split == 0  # 4-connected, so no pixels of a gap stray from their object
