"""Instance masks with more than 65535 objects: read as uint32 ids from 32-bit TIFFs, stored in the case, and
predictions of that many objects written losslessly (a 32-bit TIFF in place of the 16-bit PNG)."""

import logging

import numpy as np
import pytest
import tifffile

from conftest import build_manifest
from unetflow.formats import ImageReadError
from unetflow.io import read_mask, write_mask
from unetflow.labels import ID_LIMIT
from unetflow.predictions import read_instances, write_instances
from unetflow.sources import case_instance_ids

GRID = 260  # one-pixel objects on every other pixel of a 520x520 image: 67600 objects, more than 16 bits hold


def many_objects() -> np.ndarray:
    """A uint32 id map of GRID x GRID one-pixel objects (ids 1..GRID^2), apart by one pixel of background."""
    ids = np.zeros((2 * GRID, 2 * GRID), np.uint32)
    ids[::2, ::2] = np.arange(1, GRID * GRID + 1, dtype=np.uint32).reshape(GRID, GRID)
    return ids


def test_a_32_bit_tiff_of_more_than_65535_ids_is_read_as_ids(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    ids = many_objects()
    write_mask(tmp_path / "images" / "c0.png", (ids > 0).astype(np.uint8) * 200)
    tifffile.imwrite(tmp_path / "masks" / "c0.tif", ids)
    with pytest.raises(ImageReadError, match="c0.tif.*set data.instances: true"):
        read_mask(tmp_path / "masks" / "c0.tif")  # class values stop at 65535
    assert np.array_equal(read_mask(tmp_path / "masks" / "c0.tif", ID_LIMIT), ids)
    manifest, _ = build_manifest(tmp_path / "images", tmp_path / "masks", instances=True)
    assert manifest.loc[0, "objects"] == GRID * GRID
    stored = case_instance_ids(manifest)[0]
    assert stored.dtype == np.uint32 and np.array_equal(stored, ids)


def test_a_prediction_of_more_than_65535_objects_is_written_losslessly(tmp_path, caplog):
    ids = many_objects().astype(np.int32)
    with caplog.at_level(logging.INFO):
        written = write_instances(tmp_path / "c0.png", [ids], None)
    assert written == tmp_path / "c0.tif" and not (tmp_path / "c0.png").exists()
    assert "32-bit TIFF" in caplog.text
    assert np.array_equal(read_instances(tmp_path / "c0.png"), ids)  # found where predict's readers look
    few = np.where(ids <= 500, ids, 0)
    assert write_instances(tmp_path / "c1.png", [few], None) == tmp_path / "c1.png"
    assert read_mask(tmp_path / "c1.png").dtype == np.uint16
    assert np.array_equal(read_instances(tmp_path / "c1.png"), few)
