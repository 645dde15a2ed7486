"""Files without a partner: images without a mask (refused, or left out with data.unpaired: skip), masks without an
image, and either whose partner is there in a format unetflow does not read."""

import logging

import cv2
import numpy as np
import pytest

from conftest import build_manifest, ingest_error, write_pairs
from unetflow.data.ingest import DataValidationError


def test_images_without_a_mask_are_left_out_with_unpaired_skip_and_masks_without_an_image_still_refused(tmp_path,
                                                                                                        caplog):
    images, masks = write_pairs(tmp_path, count=4)
    for name in ("c0.png", "c1.png"):
        (masks / name).unlink()  # annotated only in part
    with pytest.raises(DataValidationError, match=r"c0.png: no mask found .* list the pairs in data.manifest \(a "
                                                  r"CSV of columns image, mask\) .* data.unpaired: skip to leave it"):
        build_manifest(str(images), str(masks))
    with caplog.at_level(logging.WARNING):
        manifest, _ = build_manifest(str(images), str(masks), unpaired="skip")
    assert manifest["id"].tolist() == ["c2", "c3"]
    assert f"2 image(s) without a mask left out (data.unpaired: skip): {images / 'c0.png'}" in caplog.text
    cv2.imwrite(str(masks / "orphan.png"), np.zeros((32, 40), np.uint8))  # a misnamed mask: refused either way
    with pytest.raises(DataValidationError, match="orphan.png: mask without an image"):
        build_manifest(str(images), str(masks), unpaired="skip")


def test_an_image_without_a_mask_names_the_unpaired_mask_of_a_close_name(tmp_path):
    images, masks = write_pairs(tmp_path, count=3)
    (masks / "c0.png").rename(masks / "c0-seg.png")  # an automatic suffix
    (masks / "c1.png").rename(masks / "c1_annotation.png")
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(images), str(masks))
    assert "c1.png: no mask found" in str(error.value) and "c0.png" not in str(error.value)
    assert "the unpaired mask " + str(masks / "c1_annotation.png") + " has a close name" in str(error.value)


def test_a_file_whose_partner_is_in_a_format_not_read_is_said_to_be(tmp_path):
    images, masks = write_pairs(tmp_path / "formats", count=3)
    (images / "c0.png").rename(images / "c0.webp")  # its mask c0.png is not blamed for it
    (images / "c1.png").unlink()
    message = ingest_error(images, masks)
    assert f"{masks / 'c0.png'}: its image {images / 'c0.webp'} is in a format unetflow does not read (.webp): " \
           "convert it to PNG or TIFF" in message
    assert f"{masks / 'c1.png'}: mask without an image" in message
    (masks / "c2.png").rename(masks / "c2.webp")  # an image whose mask is in a format not read
    assert f"{images / 'c2.png'}: its mask {masks / 'c2.webp'} is in a format unetflow does not read" in ingest_error(
        images, masks)
    shared = tmp_path / "shared"  # images and masks in one folder: c0_mask.png is no image of its own
    shared.mkdir()
    (images / "c0.webp").rename(shared / "c0.webp")
    (masks / "c0.png").rename(shared / "c0_mask.png")
    (images / "c2.png").rename(shared / "c2.png")
    (masks / "c2.webp").rename(shared / "c2_mask.png")
    assert f"{shared / 'c0_mask.png'}: its image {shared / 'c0.webp'} is in a format" in ingest_error(shared, shared)


def test_many_images_without_a_mask_are_one_line(tmp_path):
    images, masks = write_pairs(tmp_path, count=8)
    for index in range(6):
        (masks / f"c{index}.png").unlink()
    lines = ingest_error(images, masks).splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"  - 6 files ({images / 'c0.png'}, images/c1.png, images/c2.png, "
                                                   f"images/c3.png, images/c4.png, images/c5.png): no mask found "
                                                   f"(looked for its name + one of ")
