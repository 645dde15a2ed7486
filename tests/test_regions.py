"""Region-based training (data.regions): config refusals, the region table, targets from labels, the loss, validation,
labels from region probabilities, largest components per region, per-region evaluation and model packages."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import NESTED_CLASSES, NESTED_REGIONS, applied, build_manifest, write_pairs
from unetflow.config import region_problems
from unetflow.data.pairing import DataValidationError
from unetflow.evaluate.evaluate import region_rows, scored_names
from unetflow.export.onnx import package_module
from unetflow.infer.package import Package, build_package, load_package, save_package
from unetflow.infer.predictor import Predictor, model_probabilities, pixel_confidence
from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.regions import Regions, region_table
from unetflow.net.model import UNet
from unetflow.train.losses import deep_supervision_loss, region_targets, segmentation_loss
from unetflow.train.validation import validation_scores

CLASSES = pd.DataFrame({"index": range(4), "name": list(NESTED_CLASSES), "value": list(NESTED_CLASSES.values()),
                        "color": None, "ignore": False})
REGIONS = Regions.of(region_table(NESTED_REGIONS, CLASSES))  # whole (written 2), core (1), enhancing (3)
LOOKUP = torch.from_numpy(REGIONS.lookup()).float()
DATA = dict(classes=NESTED_CLASSES, colors=None, ignore_label=None, instances=False, foreground="values",
            regions=NESTED_REGIONS)
PREDICT = dict(overlap=0.5, batch_size=2, mirror=False, precision="fp32", largest_component=False,
               min_object_size=16, object_probability=0.5)

REFUSED = {  # data section changes -> a phrase of the problem
    "unknown value": ({"regions": {**NESTED_REGIONS, "whole": [1, 2, 3, 4]}}, "region 'whole' lists [4], which are"),
    "empty region": ({"regions": {**NESTED_REGIONS, "extra": []}}, "region 'extra' lists no mask value"),
    "instances": ({"instances": True}, "cannot be combined with data.instances: true"),
    "nonzero": ({"foreground": "nonzero"}, "cannot be combined with data.foreground: nonzero"),
    "colors": ({"colors": {"a": [0, 0, 0], "b": [255, 0, 0]}}, "cannot be combined with data.colors"),
    "ignored value": ({"ignore_label": 3}, "region 'whole' holds data.ignore_label 3"),
    "smallest first": ({"regions": dict(reversed(NESTED_REGIONS.items()))},
                       "region 'enhancing' [3] would never be written: each of its values is in a later region; "
                       "order the regions from the largest to the smallest"),
    "two labels": ({"regions": {"whole": [1, 2, 3], "enhancing": [3]}},
                   "region 'whole' minus the regions after it leaves [1, 2], but it is written as one label; "
                   "reorder the regions, or say which value"),
    "not nested": ({"regions": {"whole": [1, 2, 4], "core": [2, 3], "enhancing": [4]}},
                   "region 'core' minus the regions after it leaves [2, 3], but it is written as one label; reorder "
                   "the regions, or say which value it is written as by adding a region of the others after it (each "
                   "region minus the regions after it must leave exactly one value: the label its pixels are written "
                   "as, later regions overwriting earlier ones); 'enhancing' [4] is not inside it, as nested regions "
                   "are: check the values"),
    "background": ({"regions": {"all": [0, 2], **NESTED_REGIONS}}, "region 'all' holds 0, the background"),
    "uncovered class": ({"regions": {"core": [1, 3], "enhancing": [3]}}, "class values [2] are in no region"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_impossible_regions_are_refused_naming_data_regions(case):
    changes, phrase = REFUSED[case]
    problems = region_problems({**DATA, **changes})
    assert any(phrase in problem for problem in problems), problems
    assert all(problem.startswith("data.regions") for problem in problems)


def test_nested_regions_in_their_order_are_accepted():
    assert region_problems(DATA) == [] and region_problems({**DATA, "regions": None}) == []


def test_ingest_checks_regions_against_the_values_found_in_the_masks(tmp_path):
    images, masks = write_pairs(tmp_path, values=(0, 1, 2))
    build_manifest(images, masks, regions={"a": [1, 2], "b": [2]})
    with pytest.raises(DataValidationError, match=r"region 'b' lists \[5\], which are not class values of the data "
                                                  r"set \[0, 1, 2\]"):
        build_manifest(images, masks, regions={"a": [1, 2], "b": [2, 5]})


def test_region_table_maps_mask_values_to_class_indices():
    classes = CLASSES.assign(value=[0, 10, 20, 40])
    table = region_table({"whole": [10, 20, 40], "core": [10, 40], "enhancing": [40]}, classes)
    assert table[["index", "name", "label", "value"]].values.tolist() == [
        [0, "whole", 2, 20], [1, "core", 1, 10], [2, "enhancing", 3, 40]]
    assert [list(members) for members in table["classes"]] == [[1, 2, 3], [1, 3], [3]]
    assert Regions.of(region_table(None, classes)) is None


def test_region_masks_from_labels_and_back():
    labels = np.array([[0, 1, 2, 3, IGNORE_INDEX]], np.uint8)
    masks = REGIONS.masks(labels)
    assert masks.shape == (3, 1, 5) and masks[:, 0].astype(int).tolist() == [[0, 1, 1, 1, 0], [0, 1, 0, 1, 0],
                                                                              [0, 0, 0, 1, 0]]
    assert REGIONS.labels_of(masks).tolist() == [[0, 1, 2, 3, 0]]  # ignored pixels lie in no region


def test_labels_from_regions_in_their_order_later_regions_overwriting():
    masks = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 0, 1]], bool)  # whole, core, enhancing
    assert REGIONS.labels_of(masks).tolist() == [2, 1, 3, 1, 3]  # a region outside the ones before it still counts


def test_region_targets_from_class_indices():
    labels = torch.tensor([[[0, 2], [1, 3]]])
    targets = region_targets(labels, LOOKUP)
    assert targets.shape == (1, 3, 2, 2)
    assert targets[0].tolist() == [[[0, 1], [1, 1]], [[0, 0], [1, 1]], [[0, 0], [0, 1]]]


def logits_of(labels: torch.Tensor, sure: float = 10.0) -> torch.Tensor:
    """Region logits (B, R, ...) that are +sure inside each region of `labels` and -sure outside."""
    return sure * (2 * region_targets(labels.masked_fill(labels == IGNORE_INDEX, 0), LOOKUP) - 1)


def test_region_loss_is_small_when_right_large_when_wrong_and_skips_ignored_pixels():
    labels = torch.randint(0, 4, (2, 8, 8))
    right, wrong = logits_of(labels), -logits_of(labels)
    for kind in ("ce", "dice", "ce_dice"):
        assert segmentation_loss(right, labels, kind, regions=LOOKUP) < 1e-3
        assert segmentation_loss(wrong, labels, kind, regions=LOOKUP) > 0.9
    both = segmentation_loss(wrong, labels, "ce_dice", regions=LOOKUP)
    assert both == pytest.approx(segmentation_loss(wrong, labels, "ce", regions=LOOKUP)
                                 + segmentation_loss(wrong, labels, "dice", regions=LOOKUP))
    ignored = labels.clone()
    ignored[:, :4] = IGNORE_INDEX
    changed = right.clone()
    changed[:, :, :4] = -changed[:, :, :4]  # wrong only where ignored
    assert segmentation_loss(changed, ignored, regions=LOOKUP) == pytest.approx(
        segmentation_loss(right, ignored, regions=LOOKUP).item(), abs=1e-6)


def test_deep_supervision_on_regions():
    labels = torch.randint(0, 4, (2, 16, 16))
    logits = torch.randn(2, 3, 16, 16)
    assert deep_supervision_loss([logits], labels, "ce_dice", regions=LOOKUP) == pytest.approx(
        segmentation_loss(logits, labels, "ce_dice", regions=LOOKUP).item())
    model = UNet(1, 3, depth=2, base_width=4, deep_supervision=True).train()
    outputs = model(torch.randn(2, 1, 16, 16))
    loss = deep_supervision_loss(outputs, labels, "ce_dice", regions=LOOKUP)
    loss.backward()
    assert len(outputs) > 1 and torch.isfinite(loss)


def nested_case(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """An image whose intensity rises inwards through nested squares (edema 2, core 1, enhancing 3) and its labels."""
    labels = np.zeros((size, size), np.uint8)
    for value, margin in ((2, 2), (1, 4), (3, 6)):
        labels[margin:size - margin, margin:size - margin] = value
    return np.array([0.0, 0.66, 0.33, 1.0], np.float32)[labels][None], labels


def thresholds() -> nn.Conv2d:
    """A 1x1 convolution whose region logits are intensity thresholds: whole > 0.16, core > 0.5, enhancing > 0.83."""
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.fill_(100.0)
        conv.bias.copy_(torch.tensor([-16.0, -50.0, -83.0]))
    return conv


def test_training_on_regions_decreases_the_loss_to_the_right_regions():
    image, labels = (torch.from_numpy(array)[None] for array in nested_case())
    torch.manual_seed(0)
    model = nn.Conv2d(1, 3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    for _ in range(300):
        loss = segmentation_loss(model(image), labels.long(), regions=LOOKUP)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert np.array_equal(REGIONS.labels_of(model(image)[0].sigmoid().detach().numpy() > 0.5), labels[0].numpy())


def test_validation_dice_is_the_mean_over_regions():
    image, labels = nested_case()
    assert validation_scores(thresholds(), [(image, labels)], [16, 16], "cpu", "ce_dice", regions=LOOKUP)[1] == 1.0
    shifted = thresholds()
    with torch.no_grad():
        shifted.bias[2] = -1000.0  # enhancing never predicted: Dice 1, 1, 0
    assert validation_scores(shifted, [(image, labels)], [16, 16], "cpu", "ce_dice",
                             regions=LOOKUP)[1] == pytest.approx(2 / 3)


def region_predictor(**predict) -> Predictor:
    """A Predictor of a small random region U-Net (3 outputs) with the regions of NESTED_REGIONS."""
    torch.manual_seed(0)
    model = UNet(1, 3, depth=2, base_width=4)
    member = dict(hparams=model.hparams, weights=model.state_dict(), source="m0", patch_size=[16, 16], resolution=1.0)
    package = Package(path="in memory", models=[member], plan={}, preprocess=applied("zscore"), input_channels=1,
                      convert_channels=False, slice_axis=2, classes=CLASSES, palette=None,
                      predict={**PREDICT, **predict}, training_data={}, versions={}, regions=REGIONS)
    return Predictor(package, "cpu")


def test_predictions_of_a_region_model_are_sigmoids_written_as_labels():
    predictor = region_predictor()
    labels, probs = predictor.predict_array(np.random.default_rng(0).standard_normal((20, 24)).astype(np.float32))
    assert probs.shape == (3, 20, 24) and probs.min() >= 0 and probs.max() <= 1
    assert np.array_equal(labels, REGIONS.labels_of(probs > 0.5))


def test_a_3d_region_model_predicts_the_sigmoid_of_each_region_mirrored_alike():
    torch.manual_seed(0)
    model = UNet(1, 3, depth=1, base_width=2, dims=3).eval()
    volume = torch.randn(1, 8, 8, 8)
    probs = model_probabilities(model, volume, [8, 8, 8], dict(PREDICT, mirror=True), torch.device("cpu"),
                                sigmoid=True)
    with torch.no_grad():  # one tile: the mean over the 8 flips of the sigmoid, flipped back
        flips = [model(volume[None].flip(axes))[0].sigmoid().flip([axis - 1 for axis in axes])
                 for axes in ([], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4])]
    assert probs.shape == (3, 8, 8, 8)
    torch.testing.assert_close(probs, torch.stack(flips).mean(0), rtol=1e-4, atol=1e-5)


def test_largest_component_of_each_region_a_removed_core_falls_back_to_the_enclosing_label():
    probs = np.zeros((3, 1, 12, 12), np.float32)
    probs[0, 0, 1:9, 1:9] = probs[0, 0, 10:, 10:] = 0.9  # whole: a large blob and a small one
    probs[1, 0, 2:6, 2:6] = probs[1, 0, 7, 7] = 0.8  # core: a large part and a speck inside the large blob
    probs[2, 0, 3:5, 3:5] = 0.7
    source = dict(id="x", kind="image", slices=1)
    labels, _, _ = region_predictor(largest_component=True).postprocessed(source, probs)
    assert labels[0, 10, 10] == 0 and labels[0, 7, 7] == 2  # the speck of core becomes whole's label, not background
    assert labels[0, 3, 3] == 3 and labels[0, 2, 2] == 1 and labels[0, 1, 1] == 2
    assert region_predictor().postprocessed(source, probs)[0][0, 7, 7] == 1


def test_confidence_of_a_region_model_is_its_least_certain_region():
    probs = np.array([[0.9, 0.2], [0.6, 0.1], [0.3, 0.05]], np.float32)
    assert pixel_confidence(probs, REGIONS).tolist() == pytest.approx([0.6, 0.8])
    assert pixel_confidence(probs, None).tolist() == pytest.approx([0.9, 0.2])


def test_evaluation_scores_each_region_of_the_labels():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6], gt[3:5, 3:5], gt[4, 4] = 2, 1, 3
    pred = gt.copy()
    pred[4, 4] = 1  # the enhancing pixel predicted as core: core is still right, enhancing missed
    gt[0, 0], pred[0, 0] = IGNORE_INDEX, 2  # ignored: not counted
    rows = {row["class"]: row for row in region_rows("x", gt, pred, None, REGIONS, None, 1.0)}
    assert [rows[c]["dice"] for c in range(4)] == [1.0, 1.0, 1.0, 0.0]
    assert rows[1]["tp"] == 16 and rows[2]["tp"] == 4 and rows[3]["fn"] == 1 and rows[0]["tp"] == 63 - 16
    assert scored_names(CLASSES, REGIONS) == {0: "background", 1: "whole", 2: "core", 3: "enhancing"}


def test_packages_carry_the_regions(tmp_path):
    torch.manual_seed(0)
    model = UNet(1, 3, depth=2, base_width=4)
    plan = dict(settings=dict(resolution=dict(value=1.0)))
    torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=[16, 16], plan=plan),
               tmp_path / "fold0.pt")
    manifest = pd.DataFrame({"id": ["a"], "image_path": ["a.png"], "mask_path": ["a_mask.png"], "kind": ["image"],
                             "slices": [1], "height": [16], "width": [16], "channels": [1], "input_channels": [1],
                             "dtype": ["uint8"]})
    table = region_table(NESTED_REGIONS, CLASSES)
    stored = pd.DataFrame({"foreground_fraction": [0.3]})
    package = build_package([str(tmp_path / "fold0.pt")], ["m/fold0"], {}, manifest, stored, CLASSES, {}, PREDICT,
                            dict(channels=None, slice_axis=2), table)
    loaded = load_package(save_package(package, tmp_path / "regions.pt"))
    assert loaded.regions == REGIONS
    tiles = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = Predictor(loaded, "cpu").models[0](tiles).sigmoid()
        torch.testing.assert_close(package_module(loaded)(tiles), expected, rtol=1e-5, atol=1e-5)
