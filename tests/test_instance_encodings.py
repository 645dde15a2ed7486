"""Instance masks as labs save them, read alike by ingest, training and evaluation: in colours (a label image exported
through a lookup table: each colour one object, black the background, a reused colour one object per part; one
warning line; colours without black, and id maps without a background 0, refused, naming the file; lossy masks are
refused in the instance mode), and as folders of object masks, one file per object (the DSB 2018 layout)."""

import logging

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import applied, build_manifest
from unetflow.data.data_warnings import data_warnings, log_warnings
from unetflow.data.demo_cells import render_touching_cells
from unetflow.data.pairing import DataValidationError, data_files
from unetflow.data.preprocess import preprocess_sources
from unetflow.evaluate.evaluate import evaluate_instance_source
from unetflow.instances.targets import object_ids
from unetflow.io.images import write_mask
from unetflow.io.store import load_array

PALETTE = np.random.default_rng(7).integers(40, 256, (8, 3)).astype(np.uint8)  # a lookup table of 8 colours


def touching(ids: np.ndarray) -> set[tuple[int, int]]:
    """The pairs of objects that touch (side or corner), both ways round."""
    pairs = set()
    for a, b in [(ids[:, :-1], ids[:, 1:]), (ids[:-1], ids[1:]), (ids[:-1, :-1], ids[1:, 1:]),
                 (ids[:-1, 1:], ids[1:, :-1])]:
        where = (a != b) & (a > 0) & (b > 0)
        pairs |= {(int(x), int(y)) for x, y in zip(a[where], b[where])}
    return pairs | {(y, x) for x, y in pairs}


def in_colours(ids: np.ndarray) -> np.ndarray:
    """An id map (H, W) on black, each object in the first PALETTE colour none of its touching neighbours has (so
    distant objects share colours)."""
    neighbours, slot = touching(ids), {}
    for index in np.unique(ids[ids > 0]).tolist():
        taken = {slot.get(other) for mine, other in neighbours if mine == index}
        slot[index] = next(colour for colour in range(len(PALETTE)) if colour not in taken)
    colours = np.zeros((*ids.shape, 3), np.uint8)
    for index, colour in slot.items():
        colours[ids == index] = PALETTE[colour]
    return colours


def same_objects(found: np.ndarray, expected: np.ndarray) -> bool:
    """Whether two id maps draw the same objects, whatever their ids."""
    pairs = np.unique(np.stack([found.ravel(), expected.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(found)) == len(np.unique(expected))


def touching_cells_in_colours(tmp_path, count: int = 2):
    """Images and colour masks of demo touching cells (c<i>) in tmp_path/images and tmp_path/masks; their id maps."""
    (tmp_path / "images").mkdir(parents=True), (tmp_path / "masks").mkdir()
    truths = []
    for index in range(count):
        image, ids = render_touching_cells(np.random.default_rng(index), 64)
        write_mask(tmp_path / "images" / f"c{index}.png", image)
        Image.fromarray(in_colours(ids)).save(tmp_path / "masks" / f"c{index}.png")
        truths.append(ids)
    return tmp_path / "images", tmp_path / "masks", truths


def test_a_colour_mask_reads_as_its_objects_with_reused_colours_apart_and_specks_dropped():
    _, ids = render_touching_cells(np.random.default_rng(0), 64)
    assert len(np.unique(in_colours(ids).reshape(-1, 3), axis=0)) < ids.max()  # colours are reused
    slipped = ids.copy()
    slipped[0:2, 0:2] = 3  # 4 stray pixels of cell 3's colour in a corner: an annotation slip
    found = object_ids(in_colours(slipped)[None])[0]
    assert same_objects(found, np.where((slipped == 3) & (ids != 3), 0, slipped))


def test_ingest_reads_colour_masks_as_objects_and_says_so_in_one_line(tmp_path, caplog):
    images, masks, truths = touching_cells_in_colours(tmp_path)
    manifest, classes = build_manifest(images, masks, instances=True)
    assert manifest["colour_ids"].tolist() == [True, True]
    assert manifest["objects"].tolist() == [len(np.unique(ids)) - 1 for ids in truths]
    warnings = data_warnings(manifest, classes)
    assert warnings["kind"].tolist() == ["colour_ids", "colour_ids"]
    with caplog.at_level(logging.WARNING):
        log_warnings(warnings)
    assert len(caplog.records) == 1 and "2 instance mask(s) saved in colours" in caplog.text
    stored = preprocess_sources(manifest, classes, str(tmp_path / "arrays"), applied("zscore"))
    for path, ids in zip(stored["array_path"], truths):
        assert same_objects(load_array(path, "instances")[0], ids)  # what training and the report see


def test_evaluation_scores_a_prediction_of_the_same_objects_perfect(tmp_path):
    images, masks, truths = touching_cells_in_colours(tmp_path, count=1)
    manifest, _ = build_manifest(images, masks, instances=True)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    write_mask(predictions / "c0.png", truths[0])  # the grey ids the instance mode writes
    rows = evaluate_instance_source(manifest.iloc[0].to_dict(), str(predictions), dict(spacing=None, tolerance=1.0))
    objects = next(row for row in rows if row["class"] == 1)
    assert objects["object_tp"] == len(np.unique(truths[0])) - 1 and objects["object_fp"] == objects["object_fn"] == 0


def test_colours_without_black_are_refused_naming_the_file(tmp_path):
    images, masks, truths = touching_cells_in_colours(tmp_path, count=1)
    white = in_colours(truths[0])
    white[truths[0] == 0] = 255
    Image.fromarray(white).save(masks / "c0.png")
    with pytest.raises(DataValidationError, match=r"c0\.png: an instance mask in colours without black"):
        build_manifest(images, masks, instances=True)


def test_ids_counted_from_1_are_refused_as_a_background_object_unless_0_is_the_background(tmp_path):
    images, masks, truths = touching_cells_in_colours(tmp_path, count=2)
    for index, ids in enumerate(truths):  # MATLAB-style ids: the background is 1
        (masks / f"c{index}.png").unlink()
        write_mask(masks / f"c{index}.png", (ids + 1).astype(np.uint16))
    with pytest.raises(DataValidationError) as error:
        build_manifest(images, masks, instances=True)
    share = (truths[0] == 0).mean()
    assert f"c0.png: an instance mask without background (0) pixels, whose id 1 covers {share:.0%} of it" in \
        str(error.value) and "c1.png" in str(error.value)
    for index, ids in enumerate(truths):
        write_mask(masks / f"c{index}.png", ids.astype(np.uint16))
    assert build_manifest(images, masks, instances=True)[0]["objects"].tolist() == [
        len(np.unique(ids)) - 1 for ids in truths]


def test_a_lossy_instance_mask_is_refused_without_offering_to_snap_its_ids(tmp_path):
    images, masks, truths = touching_cells_in_colours(tmp_path, count=1)
    (masks / "c0.png").unlink()
    Image.fromarray(in_colours(truths[0])).save(masks / "c0.jpg", quality=95)
    for lossy_masks in ["refuse", "snap"]:
        with pytest.raises(DataValidationError, match=r"c0\.jpg: JPEG masks are lossy .* object ids cannot be snapped"):
            build_manifest(images, masks, instances=True, lossy_masks=lossy_masks)


def dsb_layout(root, count: int = 2) -> list[np.ndarray]:
    """Demo touching cells in the DSB 2018 layout: root/<case>/images/<case>.png and root/<case>/masks/<k>.png, one
    0/255 file per cell; their id maps."""
    truths = []
    for index in range(count):
        image, ids = render_touching_cells(np.random.default_rng(index), 64)
        case = root / f"case{index}"
        (case / "images").mkdir(parents=True), (case / "masks").mkdir()
        write_mask(case / "images" / f"case{index}.png", image)
        for cell in range(1, int(ids.max()) + 1):
            write_mask(case / "masks" / f"cell{cell:03d}.png", (ids == cell).astype(np.uint8) * 255)
        truths.append(ids)
    return truths


def test_folders_of_object_masks_in_the_dsb_layout_read_as_their_objects(tmp_path, caplog):
    truths = dsb_layout(tmp_path / "stage1_train")
    y, x = np.argwhere(ndimage.binary_erosion(truths[1] == 0, np.ones((3, 3), bool)))[0]
    slipped = (truths[1] == 1).astype(np.uint8) * 255
    slipped[y, x] = 255  # one stray pixel of cell 1, away from every cell: an annotation slip
    write_mask(tmp_path / "stage1_train/case1/masks/cell001.png", slipped)
    (tmp_path / "stage1_train/case0/masks/._cell001.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's copy: no mask
    data = dict(images=str(tmp_path / "stage1_train/*/images/*.png"), masks=str(tmp_path / "stage1_train/*/masks"))
    manifest, classes = build_manifest(data["images"], data["masks"], instances=True)
    assert manifest["id"].tolist() == ["case0", "case1"]
    assert manifest["objects"].tolist() == [len(np.unique(ids)) - 1 for ids in truths]
    with caplog.at_level(logging.WARNING):
        log_warnings(data_warnings(manifest, classes))
    assert "(e.g. case1/masks: ids [1]: stray parts of 1 px" in caplog.text  # the case, not only "masks"
    stored = preprocess_sources(manifest, classes, str(tmp_path / "arrays"), applied("zscore"))
    for path, ids in zip(stored["array_path"], truths):
        np.testing.assert_array_equal(load_array(path, "instances")[0], ids)  # ids in file-name order
    inputs = data_files(data)
    assert str(tmp_path / "stage1_train/case1/masks/cell003.png") in inputs  # a changed object reruns ingest


def test_an_object_file_wholly_covered_by_later_ones_is_left_out_with_a_warning(tmp_path, caplog):
    truths = dsb_layout(tmp_path / "cases", count=1)
    write_mask(tmp_path / "cases/case0/masks/cell999.png", (truths[0] == 2).astype(np.uint8) * 255)  # cell 2 again
    manifest, classes = build_manifest(str(tmp_path / "cases/*/images/*.png"), str(tmp_path / "cases/*/masks"),
                                       instances=True)
    assert list(manifest.loc[0, "covered_objects"]) == ["cell002.png"]
    assert manifest.loc[0, "objects"] == len(np.unique(truths[0])) - 1  # the copy stands in for it
    with caplog.at_level(logging.WARNING):
        log_warnings(data_warnings(manifest, classes))
    assert "1 object mask file(s) in 1 folder(s) wholly covered by later files" in caplog.text


def test_a_folder_of_object_masks_per_image_is_one_foreground_class_without_instances(tmp_path):
    truths = dsb_layout(tmp_path / "cases", count=1)
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    (tmp_path / "cases/case0/images/case0.png").rename(tmp_path / "images/case0.png")
    (tmp_path / "cases/case0/masks").rename(tmp_path / "masks/case0")  # masks/<stem>/<object>.png
    manifest, classes = build_manifest(tmp_path / "images", tmp_path / "masks")
    assert classes["value"].tolist() == [0, 255] and manifest.loc[0, "mask_path"] == str(tmp_path / "masks/case0")
    share = dict(zip(manifest.loc[0, "label_values"], manifest.loc[0, "label_fractions"]))[255]
    assert share == pytest.approx((truths[0] > 0).mean())


def test_an_object_mask_of_another_size_is_refused_naming_it(tmp_path):
    dsb_layout(tmp_path / "stage1_train", count=1)
    write_mask(tmp_path / "stage1_train/case0/masks/cell002.png", np.full((32, 64), 255, np.uint8))
    with pytest.raises(DataValidationError, match=r"cell002\.png: 32x64 px but cell001\.png of the same object "):
        build_manifest(str(tmp_path / "stage1_train/*/images/*.png"), str(tmp_path / "stage1_train/*/masks"),
                       instances=True)


def grid_of_squares(count: int, side: int = 3, gap: int = 2, columns: int = 20) -> np.ndarray:
    """An id map of `count` separate squares, ids 1..count in rows of `columns` (uint32)."""
    rows, step = -(-count // columns), side + gap
    ids = np.zeros((rows * step + gap, columns * step + gap), np.uint32)
    for index in range(count):
        top, left = gap + step * (index // columns), gap + step * (index % columns)
        ids[top:top + side, left:left + side] = index + 1
    return ids


def write_one_mask(tmp_path, mask: np.ndarray) -> tuple:
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    write_mask(tmp_path / "images" / "c0.png", (mask > 0).astype(np.uint8) * 200)
    write_mask(tmp_path / "masks" / "c0.png", mask)
    return tmp_path / "images", tmp_path / "masks"


def test_a_binary_mask_in_the_instance_mode_is_refused_not_cut_down_to_one_object(tmp_path):
    images, masks = write_one_mask(tmp_path, (grid_of_squares(19, side=6) > 0).astype(np.uint8) * 255)
    with pytest.raises(DataValidationError, match=r"c0\.png: 1 id\(s\) are not one connected object \(id 255 in "
                                                  r"parts of 36/36/36/36/\.\.\. px\): one value on 19 separate "
                                                  r"objects is a binary mask, not one id per object"):
        build_manifest(images, masks, instances=True)


def test_specks_of_many_ids_are_dropped_as_slips_and_large_parts_refused(tmp_path):
    ids = grid_of_squares(40, side=6).astype(np.uint16)
    slipped = ids.copy()
    slipped[0, 0:40:2] = np.arange(1, 21)  # a 1-px speck of each of half the ids on the top row
    images, masks = write_one_mask(tmp_path, slipped)
    manifest, _ = build_manifest(images, masks, instances=True)
    assert manifest.loc[0, "objects"] == 40 and list(manifest.loc[0, "speck_ids"]) == list(range(1, 21))


def test_ids_of_an_8_bit_mask_wrapped_past_255_are_refused_naming_the_cause(tmp_path):
    images, masks = write_one_mask(tmp_path, (grid_of_squares(300) % 256).astype(np.uint8))
    with pytest.raises(DataValidationError, match=r"c0\.png: 44 id\(s\) are not one connected object .* the mask has "
                                                  r"8-bit ids and nearly 255 of them, .* save it with 16-bit ids"):
        build_manifest(images, masks, instances=True)
