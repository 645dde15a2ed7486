"""Property: any valid image/mask pair, in every supported format and encoding, survives ingest and preprocessing
with its geometry, intensities (lossless formats) and labels intact; a volume stored in array order is written back
in its own axis order and header."""

import tempfile
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import applied, build_manifest
from unetflow.data.normalization import normalize
from unetflow.data.preprocess import preprocess_source
from unetflow.io.prediction_files import write_source_labels
from unetflow.io.store import load_array

IMAGE_FORMATS = ["png8", "png16", "tif8", "tif16", "bmp", "jpeg"]
MASK_FORMATS = ["png", "png16", "png1bit", "png_palette", "tif", "bmp", "gif"]


def write_image(path_stem: Path, fmt: str, pixels: np.ndarray) -> np.ndarray:
    """Write (H, W, C) uint8 pixels (C in 1, 3, 4) as `fmt`; return what reading should give (RGB, alpha dropped)."""
    if fmt in ("png16", "tif16"):
        pixels = pixels.astype(np.uint16) * 257
    expected = pixels[..., :3] if pixels.shape[2] == 4 else pixels
    if fmt.startswith("tif"):
        tifffile.imwrite(path_stem.with_suffix(".tif"), expected if expected.shape[2] == 3 else expected[..., 0],
                         photometric="rgb" if expected.shape[2] == 3 else "minisblack")
        return expected
    suffix = {"png8": ".png", "png16": ".png", "bmp": ".bmp", "jpeg": ".jpg"}[fmt]
    stored = pixels if fmt.startswith("png") else expected  # BMP and JPEG get no alpha
    bgr = stored[..., 0] if stored.shape[2] == 1 else stored[..., [2, 1, 0, 3][:stored.shape[2]]]
    assert cv2.imwrite(str(path_stem.with_suffix(suffix)), bgr)
    return expected


def write_mask(path_stem: Path, fmt: str, labels: np.ndarray) -> None:
    """Write (H, W) labels (< 256, or 0/1 for 1-bit, any uint16 for png16) in the mask format `fmt`."""
    if fmt == "png16":
        cv2.imwrite(str(path_stem.with_suffix(".png")), labels.astype(np.uint16) * 300)
    elif fmt == "png1bit":
        Image.fromarray(labels.astype(bool)).save(path_stem.with_suffix(".png"))
    elif fmt in ("png_palette", "gif"):
        image = Image.fromarray(labels.astype(np.uint8), mode="P")
        image.putpalette(np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8).tobytes())
        image.save(path_stem.with_suffix(".png" if fmt == "png_palette" else ".gif"), optimize=False)
    elif fmt == "tif":
        tifffile.imwrite(path_stem.with_suffix(".tif"), labels.astype(np.uint8), photometric="minisblack")
    else:
        cv2.imwrite(str(path_stem.with_suffix({"png": ".png", "bmp": ".bmp"}[fmt])), labels.astype(np.uint8))


def stored_values(fmt: str, labels: np.ndarray) -> np.ndarray:
    """The mask values ingest should find for labels written in `fmt` (a 1-bit mask's white is 255)."""
    return labels.astype(np.int64) * {"png16": 300, "png1bit": 255}.get(fmt, 1)


@st.composite
def pairs(draw):
    height, width = draw(st.integers(4, 24)), draw(st.integers(4, 24))
    image_format, mask_format = draw(st.sampled_from(IMAGE_FORMATS)), draw(st.sampled_from(MASK_FORMATS))
    channels = draw(st.sampled_from([1, 3, 4] if image_format in ("png8", "png16") else [1, 3]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    n_values = 2 if mask_format == "png1bit" else draw(st.integers(2, 5))
    palette = np.sort(rng.choice(2 if mask_format == "png1bit" else 200, n_values, replace=False))
    labels = palette[rng.integers(0, n_values, (height, width))]
    labels.flat[:n_values] = palette  # every value occurs at least once
    return image_format, mask_format, rng.integers(0, 256, (height, width, channels), dtype=np.uint8), labels


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_2d_pairs_survive_ingest_and_preprocessing(pair):
    image_format, mask_format, pixels, labels = pair
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "images").mkdir(), (folder / "masks").mkdir()
        expected_image = write_image(folder / "images" / "case", image_format, pixels)
        write_mask(folder / "masks" / "case", mask_format, labels)
        manifest, classes = build_manifest(str(folder / "images"), str(folder / "masks"))
        row = manifest.iloc[0]
        assert (row["height"], row["width"], row["channels"]) == expected_image.shape
        values = np.unique(stored_values(mask_format, labels))
        assert classes["value"].tolist() == values.tolist()
        out = preprocess_source(row.to_dict(), classes, str(folder), applied("zscore"))
        image, mapped = load_array(out["array_path"], "image"), load_array(out["array_path"], "labels")
        assert np.array_equal(mapped[0], np.searchsorted(values, stored_values(mask_format, labels)))
        assert image.shape == (expected_image.shape[2], 1, *labels.shape)
        if image_format != "jpeg":
            expected = normalize(np.moveaxis(expected_image, -1, 0)).astype(np.float16)
            # equal up to one float16 step: the float32 statistics of differently laid out arrays (the file as read,
            # the test's view without alpha) may differ in their last bit
            np.testing.assert_allclose(image[:, 0].astype(np.float32), expected, rtol=2**-10, atol=1e-4)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.tuples(st.integers(2, 12), st.integers(2, 12), st.integers(2, 6)), axis=st.integers(0, 2),
       float_labels=st.booleans(), seed=st.integers(0, 2**16))
def test_volumes_survive_storing_in_array_order_and_writing_back(shape, axis, float_labels, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, shape).astype(np.uint8)
    labels.flat[:3] = [0, 1, 2]
    affine = np.diag([*rng.uniform(0.5, 2, 3), 1.0])
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "images").mkdir(), (folder / "masks").mkdir()
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), affine), folder / "images" / "v.nii.gz")
        nib.save(nib.Nifti1Image(labels.astype(np.float32 if float_labels else np.uint8), affine),
                 folder / "masks" / "v.nii.gz")
        manifest, classes = build_manifest(str(folder / "images"), str(folder / "masks"), slice_axis=axis)
        row = manifest.iloc[0].to_dict()
        assert len(manifest) == 1 and row["slices"] == shape[axis] and row["group"] == "v"
        out = preprocess_source(row, classes, str(folder), applied("minmax"))
        stored = load_array(out["array_path"], "labels")
        assert np.array_equal(stored, np.moveaxis(labels, axis, 0))
        write_source_labels(folder / "pred.nii.gz", stored, row)
        written = nib.load(folder / "pred.nii.gz")
        assert np.array_equal(np.asarray(written.dataobj), labels) and np.allclose(written.affine, affine)
