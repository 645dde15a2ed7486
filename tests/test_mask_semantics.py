"""Masks as labs store them, with data.classes left undeclared: 1-bit masks mixed with 8-bit 0/255 ones, the
foreground encoded differently by file, an unannotated 255, stray values, soft edges and palettes that disagree;
`data.foreground: nonzero` trains every non-zero value as one foreground class (instance-labelled masks:
tests/test_instance_labelled.py)."""


import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import build_manifest, ingest_error, trained_labels, write_pairs
from unetflow.data import soft_edges
from unetflow.data.mask_checks import palette_colours
from unetflow.io.labels import IGNORE_INDEX, class_values, ignore_value, snap_to_nearest
from unetflow.io.prediction_files import write_class_mask
from unetflow.io.sources import read_source_mask

SIZE = (48, 64)


def blobs(seed: int) -> np.ndarray:
    """A boolean foreground of a few random rectangles."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SIZE, bool)
    for _ in range(3):
        y, x = rng.integers(0, SIZE[0] - 10), rng.integers(0, SIZE[1] - 10)
        mask[y:y + 10, x:x + 12] = True
    return mask


def write_binary_masks(masks, encodings: dict[str, str]) -> dict[str, np.ndarray]:
    """Write case c<i>'s foreground in the named encoding: 1-bit PNG/BMP/TIFF, or 8-bit 0/255 or 0/1 PNG."""
    truth = {}
    for index, (name, encoding) in enumerate(encodings.items()):
        foreground = truth[name] = blobs(index)
        for old in masks.glob(f"{name}.*"):
            old.unlink()
        if encoding == "1bit_png":
            Image.fromarray(foreground).save(masks / f"{name}.png")
        elif encoding == "1bit_bmp":
            Image.fromarray(foreground).save(masks / f"{name}.bmp")
        elif encoding == "1bit_tif":
            tifffile.imwrite(masks / f"{name}.tif", foreground, compression="packbits")
        else:
            cv2.imwrite(str(masks / f"{name}.png"), foreground.astype(np.uint8) * {"8bit_255": 255, "8bit_1": 1}[
                encoding])
    return truth


# ------------------------------------------------------------------------------------- 1-bit and 8-bit binary


def test_one_bit_masks_mixed_with_0_255_masks_train_one_foreground_class(tmp_path):
    images, masks = write_pairs(tmp_path, count=6, size=SIZE)
    truth = write_binary_masks(masks, {"c0": "1bit_png", "c1": "1bit_bmp", "c2": "1bit_tif", "c3": "8bit_255",
                                       "c4": "8bit_255", "c5": "1bit_png"})
    manifest, classes = build_manifest(str(images), str(masks))
    assert classes["name"].tolist() == ["background", "foreground"] and classes["value"].tolist() == [0, 255]
    for case_id, labels in trained_labels(manifest, classes).items():
        np.testing.assert_array_equal(labels, truth[case_id].astype(np.uint8))


def test_one_bit_masks_mixed_with_0_1_masks_are_refused_as_ambiguous(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=SIZE)
    write_binary_masks(masks, {"c0": "1bit_png", "c1": "1bit_png", "c2": "8bit_1", "c3": "8bit_1"})
    message = ingest_error(images, masks)
    assert message.startswith("1 problem(s)")
    assert "every mask holds one foreground value, but not the same one: 1 in 2 file(s) (e.g. masks/c2.png); 255 " \
           "in 2 file(s) (e.g. masks/c0.png), 2 of them 1-bit masks, read as 0/255" in message
    assert "data.foreground: nonzero" in message and "data.classes" in message


def test_different_foreground_values_by_file_train_as_one_class_with_nonzero(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=SIZE)
    truth = write_binary_masks(masks, {"c0": "8bit_1", "c1": "8bit_255", "c2": "8bit_1", "c3": "1bit_tif"})
    manifest, classes = build_manifest(str(images), str(masks), foreground="nonzero")
    assert classes.loc[~classes["ignore"], ["name", "value", "nonzero"]].values.tolist() == [
        ["background", 0, False], ["foreground", 255, True]]
    assert all(values == [0, 255] for values in manifest["label_values"])
    for case_id, labels in trained_labels(manifest, classes).items():
        np.testing.assert_array_equal(labels, truth[case_id].astype(np.uint8))


def test_declared_values_the_masks_do_not_store_are_named_beside_the_values_they_do(tmp_path):
    images, masks = write_pairs(tmp_path, count=2, size=SIZE, values=(0, 1))
    message = ingest_error(images, masks, classes={"background": 0, "cell": 255})
    assert "mask values [1] are not among the declared classes {'background': 0, 'cell': 255}, while the declared " \
           "value(s) [255] occur in no mask: declare the values the masks store" in message
    assert "ignore_label" not in message


def test_declared_classes_keep_separate_foreground_values_apart(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=SIZE)
    write_binary_masks(masks, {"c0": "8bit_1", "c1": "8bit_255", "c2": "8bit_1", "c3": "8bit_255"})
    _, classes = build_manifest(str(images), str(masks), classes={"background": 0, "a": 1, "b": 255})
    assert classes["value"].tolist() == [0, 1, 255]


def test_nonzero_names_classes_and_writes_predictions_with_their_values(tmp_path):
    images, masks = write_pairs(tmp_path, count=3, size=SIZE, values=(0, 1, 2, 3))
    manifest, classes = build_manifest(str(images), str(masks), foreground="nonzero",
                                       classes={"background": 0, "nucleus": 1})
    assert classes["name"].tolist() == ["background", "nucleus"] and classes["value"].tolist() == [0, 1]
    labels = trained_labels(manifest, classes)["c0"]
    stored = cv2.imread(str(masks / "c0.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(labels, (stored > 0).astype(np.uint8))
    written = write_class_mask(tmp_path / "c0_pred.png", labels[None], classes, dict(kind="image"))
    np.testing.assert_array_equal(cv2.imread(str(written), cv2.IMREAD_UNCHANGED), (stored > 0).astype(np.uint8))


def test_nonzero_keeps_the_ignore_label(tmp_path):
    images, masks = write_pairs(tmp_path, count=3, size=SIZE, values=(0, 1, 2, 9))
    manifest, classes = build_manifest(str(images), str(masks), foreground="nonzero", ignore_label=9)
    stored = cv2.imread(str(masks / "c1.png"), cv2.IMREAD_UNCHANGED)
    expected = np.where(stored == 9, IGNORE_INDEX, stored > 0).astype(np.uint8)
    np.testing.assert_array_equal(trained_labels(manifest, classes)["c1"], expected)


@pytest.mark.parametrize("options,words", [
    (dict(classes={"background": 0, "a": 1, "b": 2}), "data.classes may only name them"),
    (dict(classes={"cell": 255, "background": 0}), "data.classes may only name them"),
    (dict(colors={"bg": [0, 0, 0], "fg": [255, 255, 255]}), "leave data.colors unset"),
    (dict(ignore_label=255), "data.ignore_label 255 is a class value of data.foreground: nonzero"),
])
def test_nonzero_refuses_settings_it_cannot_honour(tmp_path, options, words):
    images, masks = write_pairs(tmp_path, count=2, size=SIZE)
    assert words in ingest_error(images, masks, foreground="nonzero", **options)


# ------------------------------------------------------------------------------------------------- strays


def test_stray_value_in_one_mask_is_refused_unless_declared(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=(64, 64))
    stray = cv2.imread(str(masks / "c2.png"), cv2.IMREAD_UNCHANGED)
    stray[0, :3] = 7
    cv2.imwrite(str(masks / "c2.png"), stray)
    message = ingest_error(images, masks)
    assert message.startswith("1 problem(s)")
    assert "c2.png: mask value(s) 7 on 3 pixel(s), found in no more than 5% of the masks: stray values" in message
    assert "255" not in message.split("c2.png")[1].split(";")[0]
    assert "mask values [7] are not among the declared classes" in ingest_error(
        images, masks, classes={"background": 0, "cell": 255})
    _, classes = build_manifest(str(images), str(masks), classes={"background": 0, "odd": 7, "cell": 255})
    assert classes["value"].tolist() == [0, 7, 255]


def test_255_beside_small_class_values_is_named_as_unannotated_unless_declared(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=SIZE, values=(0, 1, 2, 255))
    message = ingest_error(images, masks)
    assert message.startswith("1 problem(s)")
    assert "class values 1, 2 and 255 (4 file(s), e.g. masks/c0.png, masks/c1.png, masks/c2.png, ...), which usually " \
        "marks pixels nobody annotated; set data.ignore_label: 255" in message
    _, classes = build_manifest(str(images), str(masks), ignore_label=255)
    assert class_values(classes) == [0, 1, 2] and ignore_value(classes) == 255
    _, classes = build_manifest(str(images), str(masks), classes={"bg": 0, "a": 1, "b": 2, "c": 255})
    assert class_values(classes) == [0, 1, 2, 255]


def test_palette_masks_whose_palettes_order_the_classes_differently_are_refused(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=SIZE, values=(0, 1, 2))
    for index in range(4):  # c2 and c3 swap indices 1 and 2 and their colours: they look as c0 and c1 do
        labels = cv2.imread(str(masks / f"c{index}.png"), cv2.IMREAD_UNCHANGED)
        colours = [(0, 0, 0), (0, 255, 0), (255, 0, 0)]
        if index >= 2:
            labels, colours = np.choose(labels, [0, 2, 1]).astype(np.uint8), [colours[0], colours[2], colours[1]]
        image = Image.fromarray(labels, mode="P")
        image.putpalette([v for colour in colours for v in colour])
        image.save(masks / f"c{index}.png")
    message = ingest_error(images, masks)
    assert "the palette masks disagree on what their indices look like (index 1 is [0, 255, 0] in masks/c0.png, " \
           "[255, 0, 0] in masks/c2.png; index 2 is [255, 0, 0] in masks/c0.png, [0, 255, 0] in masks/c2.png)" \
        in message
    grey = Image.fromarray(np.asarray(Image.open(masks / "c2.png")), mode="P")
    grey.putpalette([v for value in range(256) for v in (value,) * 3])  # a tool's default palette: no colours
    grey.save(tmp_path / "grey.png")
    assert palette_colours(tmp_path / "grey.png", [0, 1, 2]) is None  # compared with no other palette
    assert palette_colours(masks / "c2.png", [0, 1, 2]) == [[0, 0, 0, 0], [1, 255, 0, 0], [2, 0, 255, 0]]
    manifest, classes = build_manifest(str(images), str(masks), colors={"bg": [0, 0, 0], "g": [0, 255, 0],
                                                                       "r": [255, 0, 0]})
    for case_id, labels in trained_labels(manifest, classes).items():  # green is class 1 in every file
        shown = np.asarray(Image.open(masks / f"{case_id}.png").convert("RGB"))
        np.testing.assert_array_equal(labels == 1, (shown == [0, 255, 0]).all(axis=-1))


def test_a_palette_mask_showing_index_1_as_white_beside_0_255_masks_is_refused_snapped_or_not(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=SIZE)  # 0/255 masks
    labels = (cv2.imread(str(masks / "c3.png"), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8)
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 255, 255, 255])  # index 1 shown white: it looks like the others
    image.save(masks / "c3.png")
    for options in ({}, dict(classes={"background": 0, "lesion": 255}, lossy_masks="snap")):
        assert "c3.png: a palette (indexed) mask that shows index 1 as 255, the value(s) the other masks store" in \
            ingest_error(images, masks, **options)


def test_a_stray_value_and_another_foreground_encoding_are_reported_in_one_run(tmp_path):
    images, masks = write_pairs(tmp_path, count=30, size=(64, 64))
    stray = cv2.imread(str(masks / "c1.png"), cv2.IMREAD_UNCHANGED)
    stray[0, :5] = 128
    cv2.imwrite(str(masks / "c1.png"), stray)
    other = cv2.imread(str(masks / "c2.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(masks / "c2.png"), np.where(other > 0, 200, 0).astype(np.uint8))
    message = ingest_error(images, masks)
    assert message.startswith("2 problem(s)")
    assert "c1.png: mask value(s) 128 on 5 pixel(s)" in message
    assert "every mask holds one foreground value, but not the same one: 200 in 1 file(s) (e.g. masks/c2.png); " \
           "255 in 29 file(s)" in message


def test_a_palette_mask_showing_a_stored_value_does_not_hide_another_masks_problem(tmp_path):
    images, masks = write_pairs(tmp_path, count=4, size=SIZE)  # 0/255 masks
    labels = (cv2.imread(str(masks / "c3.png"), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8)
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.save(masks / "c3.png")
    wide = cv2.imread(str(masks / "c1.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(masks / "c1.png"), np.where(wide > 0, 65535, 0).astype(np.uint16))
    message = ingest_error(images, masks)
    assert message.startswith("2 problem(s)")
    assert "c3.png: a palette (indexed) mask that shows index 1 as 255" in message
    assert "save it as a PNG of the grey values it shows" in message
    assert "every mask holds one foreground value, but not the same one: 255 in 2 file(s)" in message
    assert "65535 in 1 file(s) (e.g. masks/c1.png)" in message
    for index in (0, 2):  # 0/1 masks beside it: its index 1 is what they store, so it is not the problem
        cv2.imwrite(str(masks / f"c{index}.png"), (cv2.imread(str(masks / f"c{index}.png"), 0) > 0).astype(np.uint8))
    message = ingest_error(images, masks)
    assert "c3.png: a palette" not in message and "every mask holds one foreground value, but not the same" in message


def test_hundreds_of_scattered_values_in_one_mask_are_one_problem_naming_a_few(tmp_path):
    images, masks = write_pairs(tmp_path, count=30, size=(64, 64))
    resized = cv2.imread(str(masks / "c3.png"), cv2.IMREAD_UNCHANGED)
    rng = np.random.default_rng(0)
    for value in range(1, 201):  # each value on two scattered pixels: no object, just noise
        resized.flat[rng.choice(resized.size, 2, replace=False)] = value
    cv2.imwrite(str(masks / "c3.png"), resized)
    message = ingest_error(images, masks)
    assert message.startswith("1 problem(s)")
    found = sorted(set(np.unique(cv2.imread(str(masks / "c3.png"), cv2.IMREAD_UNCHANGED))) - {0, 255})
    assert f"c3.png: mask value(s) {len(found)} values ({', '.join(map(str, found[:5]))}, ...) on " in message


def test_a_rare_only_foreground_value_is_not_a_stray(tmp_path):
    images, masks = write_pairs(tmp_path, count=40, size=(64, 64), values=(0,))
    lone = np.zeros((64, 64), np.uint8)
    lone[5, 5:8] = 255
    cv2.imwrite(str(masks / "c7.png"), lone)
    _, classes = build_manifest(str(images), str(masks))
    assert classes["value"].tolist() == [0, 255]


# ------------------------------------------------------------------------------------ soft edges of resizing


def write_resized_pairs(folder, count: int = 6, values=(0, 255)) -> tuple:
    """Images and masks of `values` blobs, every mask saved after resizing by 1.5 with linear interpolation (soft
    edges along every border); the sharp masks, resized by nearest neighbour."""
    images, masks = write_pairs(folder, count=count, size=SIZE)
    sharp = {}
    for index in range(count):
        mask = np.zeros(SIZE, np.uint8)
        for step, value in enumerate(values[1:]):
            mask[blobs(10 * index + step)] = value
        size = (SIZE[1] * 3 // 2, SIZE[0] * 3 // 2)
        cv2.imwrite(str(masks / f"c{index}.png"), cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR))
        cv2.imwrite(str(images / f"c{index}.png"), cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))
        sharp[f"c{index}"] = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return images, masks, sharp


def test_soft_edges_of_resized_masks_are_one_problem_offering_the_snap(tmp_path):
    images, masks, _ = write_resized_pairs(tmp_path)
    message = ingest_error(images, masks)
    assert message.startswith("1 problem(s)") and "6 of 6 masks hold" in message
    assert "between the classes [0, 255] along the borders between them only" in message
    assert "set data.lossy_masks: snap with data.classes: {background: 0, foreground: 255}" in message
    assert "nonzero" not in message  # which would grow every object by its soft edge
    declared = ingest_error(images, masks, classes={"background": 0, "foreground": 255})
    assert declared.startswith("1 problem(s)") and "set data.lossy_masks: snap" in declared


def test_soft_edges_of_one_mask_and_of_masks_scaled_up_a_lot_are_recognised(tmp_path):
    images, masks, sharp = write_resized_pairs(tmp_path, count=20)
    for index in range(1, 20):  # the others saved sharp: one mask resized is soft edges too, not stray values
        cv2.imwrite(str(masks / f"c{index}.png"), sharp[f"c{index}"])
    assert "1 of 20 masks hold" in ingest_error(images, masks)
    for index in range(20):  # every mask drawn at a third of its size and scaled up by Pillow: bands 4-6 px wide
        small = Image.fromarray(sharp[f"c{index}"]).resize((SIZE[1] // 2, SIZE[0] // 2), Image.NEAREST)
        small.resize((SIZE[1] * 3 // 2, SIZE[0] * 3 // 2), Image.BILINEAR).save(masks / f"c{index}.png")
    assert "20 of 20 masks hold" in ingest_error(images, masks)


def test_soft_edges_read_each_mask_checked_once(tmp_path, monkeypatch):
    images, masks, _ = write_resized_pairs(tmp_path)
    read = []
    monkeypatch.setattr(soft_edges, "read_source_mask", lambda row: read.append(row["mask_path"]) or
                        read_source_mask(row))
    assert "6 of 6 masks hold" in ingest_error(images, masks)
    assert sorted(read) == sorted(set(read)) and len(read) == 6  # the classes and the holders found in one reading


def test_soft_edges_train_as_their_classes_when_snapped(tmp_path):
    images, masks, sharp = write_resized_pairs(tmp_path, values=(0, 128, 255))
    assert "data.classes: {class_0: 0, class_128: 128, class_255: 255}" in ingest_error(images, masks)
    manifest, classes = build_manifest(str(images), str(masks), classes={"bg": 0, "a": 128, "b": 255},
                                       lossy_masks="snap")
    assert (manifest["snapped_pixels"] > 0).all() and manifest["label_values"].map(list).tolist() == [[0, 128, 255]] * 6
    labels = trained_labels(manifest, classes)
    for name, mask in sharp.items():  # the nearest class: within a pixel of the sharp borders
        agree = (labels[name] == np.searchsorted([0, 128, 255], mask)).mean()
        assert agree > 0.97


def test_a_blend_of_two_classes_snaps_to_one_of_them_not_to_the_class_between():
    mask = np.zeros((96, 96), np.uint8)
    mask[20:60, 5:45], mask[20:60, 55:90] = 200, 100
    resized = cv2.resize(mask, (128, 128), interpolation=cv2.INTER_LINEAR)  # 0-200 borders hold values near 100
    sharp = cv2.resize(mask, (128, 128), interpolation=cv2.INTER_NEAREST)
    assert (snap_to_nearest(resized, [0, 100, 200]) == 100).sum() == pytest.approx((sharp == 100).sum(), rel=0.05)
    near_square = cv2.dilate((sharp == 100).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not ((snap_to_nearest(resized, [0, 100, 200]) == 100) & ~near_square).any()
    global_nearest = np.array([0, 100, 200])[np.abs(resized[..., None] - np.array([0, 100, 200])).argmin(-1)]
    assert ((global_nearest == 100) & ~near_square).sum() > 50  # what the nearest class alone made of the border


def test_an_in_between_value_in_one_mask_is_a_stray_there_not_soft_edges_everywhere(tmp_path):
    images, masks, sharp = write_resized_pairs(tmp_path, count=10)
    for index in range(10):  # the masks saved sharp, then a few pixels of 128 on one border of c5 only
        cv2.imwrite(str(masks / f"c{index}.png"), sharp[f"c{index}"])
    edge = sharp["c5"] > 0
    rows, cols = np.nonzero(edge & ~np.roll(edge, 1, axis=0))
    mask = sharp["c5"].copy()
    mask[rows[:6], cols[:6]] = 128
    cv2.imwrite(str(masks / "c5.png"), mask)
    message = ingest_error(images, masks)
    assert "masks hold" not in message and "c5.png" in message and "c0.png" not in message


def write_two_annotators(images, masks) -> None:
    """Masks of two classes (a blob and a ring around it) saved 0/1/2 for c0..c2 and 0/128/255 for c3..c5."""
    for index in range(6):
        inner, ring = np.zeros(SIZE, np.uint8), np.zeros(SIZE, np.uint8)
        cv2.circle(ring, (20 + index, 24), 14, 1, -1)
        cv2.circle(inner, (20 + index, 24), 9, 1, -1)
        labels = np.where(inner > 0, 1, np.where(ring > 0, 2, 0)).astype(np.uint8)
        coded = labels if index < 3 else np.array([0, 128, 255], np.uint8)[labels]
        cv2.imwrite(str(masks / f"c{index}.png"), coded)


def test_masks_of_two_annotators_storing_the_classes_differently_are_refused(tmp_path):
    images, masks = write_pairs(tmp_path, count=6, size=SIZE)
    write_two_annotators(images, masks)
    message = ingest_error(images, masks)
    assert "the masks store their foreground in 2 ways that no mask mixes: values 1, 2 in 3 file(s) (e.g. " \
           "masks/c0.png); values 128, 255 in 3 file(s) (e.g. masks/c3.png)" in message
    assert "would have 5 classes" in message
    assert "(in the order of their values: 128 -> 1, 255 -> 2; check one mask of each, the order may differ)" in message
    declared = ingest_error(images, masks, classes={"background": 0, "lv": 1, "myo": 2})
    assert f"{masks / 'c3.png'}: mask values [128, 255] are not among the declared classes" in declared
    assert "it holds none of the declared foreground values: saved with other values (another annotator or tool)? " \
           "Save it with the declared ones (in the same order: 128 -> 1, 255 -> 2; check which is which)" in declared
