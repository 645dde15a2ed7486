"""Tests of unetflow.io.images: files written with OpenCV, tifffile, Pillow and nibabel are read back exactly."""

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from unetflow.io.formats import IMAGE_SUFFIXES, MASK_SUFFIXES, VOLUME_SUFFIXES, ImageReadError, case_stem, is_lossy
from unetflow.io.images import image_info, read_image, read_mask, read_stack, write_mask

H, W = 5, 7  # non-square on purpose: a transposition changes the shape and moves the marked pixel
MARK = (1, 5)


def _marked(channels: int, dtype=np.uint8, value=None) -> np.ndarray:
    """A (H, W, channels) array of distinct values with a bright, distinct pixel at MARK."""
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    top = info.max if info else 1.0
    ramp = np.arange(H * W * channels).reshape(H, W, channels) * (top // (H * W * channels) if info else 0.01)
    array = ramp.astype(dtype)
    array[MARK] = value if value is not None else top
    return array


def _cv_write(path, rgb: np.ndarray) -> None:
    """Write an RGB(A) or grey array with OpenCV, which expects BGR(A)."""
    if rgb.shape[2] == 1:
        bgr = rgb[..., 0]
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA if rgb.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), bgr)


LOSSLESS_CASES = [  # (suffix, channels written, dtype, writer)
    (".png", 1, np.uint8, "cv"), (".png", 1, np.uint16, "cv"), (".png", 3, np.uint8, "cv"),
    (".png", 3, np.uint16, "cv"), (".png", 4, np.uint8, "cv"), (".png", 4, np.uint16, "cv"),
    (".tif", 1, np.uint8, "tiff"), (".tif", 1, np.uint16, "tiff"), (".tiff", 1, np.float32, "tiff"),
    (".tif", 3, np.uint8, "tiff"), (".tif", 3, np.uint16, "tiff"), (".tif", 4, np.uint8, "tiff"),
    (".ome.tif", 3, np.uint8, "tiff"), (".bmp", 1, np.uint8, "pillow"), (".bmp", 3, np.uint8, "pillow"),
    (".png", 2, np.uint8, "pillow"),
]


def _write(path, array: np.ndarray, writer: str) -> None:
    """Write `array` (H, W, C) with the named library."""
    if writer == "cv":
        _cv_write(path, array)
    elif writer == "tiff":
        tifffile.imwrite(path, array[..., 0] if array.shape[2] == 1 else array,
                         photometric="minisblack" if array.shape[2] == 1 else "rgb")
    else:
        Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path)


@pytest.mark.parametrize("suffix,channels,dtype,writer", LOSSLESS_CASES)
def test_lossless_round_trip_keeps_values_dtype_and_geometry(tmp_path, suffix, channels, dtype, writer):
    array = _marked(channels, dtype)
    path = tmp_path / f"case{suffix}"
    _write(path, array, writer)
    image = read_image(path)
    expected_channels = 1 if channels in (1, 2) else 3  # alpha (4th, or 2nd with grey) is dropped
    assert image.shape == (H, W, expected_channels)
    assert image.dtype == dtype
    np.testing.assert_array_equal(image, array[..., :expected_channels])


@pytest.mark.parametrize("suffix,channels,dtype,writer", LOSSLESS_CASES)
def test_header_info_matches_full_read(tmp_path, suffix, channels, dtype, writer):
    path = tmp_path / f"case{suffix}"
    _write(path, _marked(channels, dtype), writer)
    image = read_image(path)
    assert image_info(path) == dict(height=image.shape[0], width=image.shape[1], channels=image.shape[2],
                                    dtype=image.dtype.name, depth=1)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".jpg"])
def test_red_stays_red_and_marked_pixel_is_not_transposed(tmp_path, suffix):
    rgb = np.zeros((40, 56, 3), np.uint8)
    rgb[8:16, 40:48] = (255, 0, 0)  # a block, so that JPEG keeps the colour
    path = tmp_path / f"red{suffix}"
    _write(path, rgb, {".png": "cv", ".tif": "tiff", ".bmp": "pillow", ".jpg": "cv"}[suffix])
    image = read_image(path).astype(int)
    assert image.shape == (40, 56, 3)
    red, green, blue = image[12, 44]
    assert red > 200 and green < 50 and blue < 50
    assert image[44 % 40, 12].max() < 50  # the transposed position stays black


def test_jpeg_round_trip_is_close_and_flagged_lossy(tmp_path):
    grey = np.full((H * 8, W * 8), 120, np.uint8)
    path = tmp_path / "photo.jpeg"
    assert cv2.imwrite(str(path), grey)
    image = read_image(path)
    assert image.shape == (H * 8, W * 8, 1)
    assert np.abs(image[..., 0].astype(int) - 120).max() <= 2
    assert is_lossy(path) and not is_lossy(tmp_path / "mask.png")
    assert image_info(path) == dict(height=H * 8, width=W * 8, channels=1, dtype="uint8", depth=1)


def test_rgba_alpha_is_dropped_not_blended(tmp_path):
    rgba = _marked(4)
    rgba[..., 3] = 0  # fully transparent: blending would turn every pixel black or white
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    np.testing.assert_array_equal(read_image(path), rgba[..., :3])
    np.testing.assert_array_equal(read_mask(path), rgba[..., :3])


def _palette_image(indices: np.ndarray) -> Image.Image:
    """A palette image whose colours differ from its indices (index i -> (3i+10, 0, 200 - i))."""
    image = Image.fromarray(indices, "P")
    image.putpalette([v for i in range(256) for v in (min(3 * i + 10, 255), 0, max(200 - i, 0))])
    return image


@pytest.mark.parametrize("suffix", [".png", ".gif", ".bmp"])
def test_palette_mask_gives_indices_and_image_gives_colours(tmp_path, suffix):
    indices = np.zeros((H, W), np.uint8)
    indices[MARK] = 3
    indices[0, :3] = (1, 2, 4)
    path = tmp_path / f"palette{suffix}"
    _palette_image(indices).save(path)
    mask = read_mask(path)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, indices)
    image = read_image(path)
    assert image.shape == (H, W, 3)
    np.testing.assert_array_equal(image[MARK], (19, 0, 197))


def test_palette_tiff_mask_gives_indices_and_image_gives_colours(tmp_path):
    indices = np.zeros((H, W), np.uint8)
    indices[MARK] = 2
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, 2] = (65535, 257 * 128, 0)
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, indices, photometric="palette", colormap=colormap)
    np.testing.assert_array_equal(read_mask(path), indices)
    np.testing.assert_array_equal(read_image(path)[MARK], (255, 128, 0))
    assert image_info(path)["channels"] == 3


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_one_bit_mask_and_image_give_white_as_255(tmp_path, suffix):
    bits = np.zeros((H, W), bool)
    bits[MARK] = True
    path = tmp_path / f"bits{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, bits)
    else:
        Image.fromarray(bits).save(path)
    mask = read_mask(path)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, bits.astype(np.uint8) * 255)  # as an 8-bit 0/255 copy of it holds
    np.testing.assert_array_equal(read_image(path)[..., 0], bits.astype(np.uint8) * 255)


def test_sixteen_bit_label_png_is_kept(tmp_path):
    labels = np.zeros((H, W), np.uint16)
    labels[MARK] = 1000
    labels[0, 0] = 65535
    path = tmp_path / "labels.png"
    assert cv2.imwrite(str(path), labels)
    mask = read_mask(path)
    assert mask.dtype == np.uint16
    np.testing.assert_array_equal(mask, labels)


def test_binary_255_mask_keeps_stored_values(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[MARK] = 255
    path = tmp_path / "binary.png"
    Image.fromarray(labels).save(path)
    np.testing.assert_array_equal(read_mask(path), labels)


def test_colour_mask_keeps_rgb_and_grey_rgb_mask_collapses(tmp_path):
    colours = np.zeros((H, W, 3), np.uint8)
    colours[MARK] = (0, 255, 0)
    colours[0, 0] = (255, 0, 0)
    _cv_write(tmp_path / "colour.png", colours)
    np.testing.assert_array_equal(read_mask(tmp_path / "colour.png"), colours)
    grey = np.repeat(_marked(1), 3, axis=2)
    _cv_write(tmp_path / "grey.png", grey)
    np.testing.assert_array_equal(read_mask(tmp_path / "grey.png"), grey[..., 0])


def test_tiff_label_maps_become_unsigned_integers(tmp_path):
    labels = np.zeros((H, W), np.int32)
    labels[MARK] = 300
    tifffile.imwrite(tmp_path / "int32.tif", labels)
    mask = read_mask(tmp_path / "int32.tif")
    assert mask.dtype == np.uint16
    np.testing.assert_array_equal(mask, labels)
    tifffile.imwrite(tmp_path / "float.tif", labels.astype(np.float32) / 300)
    np.testing.assert_array_equal(read_mask(tmp_path / "float.tif"), labels // 300)
    tifffile.imwrite(tmp_path / "soft.tif", labels.astype(np.float32) / 600)
    with pytest.raises(ImageReadError, match="soft.tif"):
        read_mask(tmp_path / "soft.tif")


@pytest.mark.parametrize("suffix,high,dtype", [(".png", 4, np.uint8), (".png", 900, np.uint16),
                                               (".tif", 4, np.uint8), (".tiff", 900, np.uint16)])
def test_write_mask_is_lossless_in_the_smallest_dtype(tmp_path, suffix, high, dtype):
    labels = np.zeros((H, W), np.int64)
    labels[MARK] = high
    path = tmp_path / f"out{suffix}"
    write_mask(path, labels)
    stored = tifffile.imread(path) if suffix != ".png" else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == dtype
    np.testing.assert_array_equal(stored, labels)
    np.testing.assert_array_equal(read_mask(path), labels)


def test_write_mask_refuses_bad_labels(tmp_path):
    with pytest.raises(ValueError, match="0..65535"):
        write_mask(tmp_path / "neg.png", np.full((H, W), -1))
    with pytest.raises(ValueError, match="integer"):
        write_mask(tmp_path / "float.png", np.zeros((H, W), np.float32))
    with pytest.raises(ValueError, match="2D"):
        write_mask(tmp_path / "two.png", np.zeros((H, W, 2), np.uint8))


def test_stack_reads_every_page_in_order(tmp_path):
    grey = np.stack([_marked(1, np.uint16, value=100 + s)[..., 0] for s in range(4)])
    tifffile.imwrite(tmp_path / "grey.tif", grey, photometric="minisblack")
    stack = read_stack(tmp_path / "grey.tif")
    np.testing.assert_array_equal(stack, grey[..., None])
    rgb = np.stack([_marked(3), _marked(3, value=9)])
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_stack(tmp_path / "rgb.tif"), rgb)
    assert image_info(tmp_path / "rgb.tif")["depth"] == 2
    tifffile.imwrite(tmp_path / "one.tif", grey[0])
    np.testing.assert_array_equal(read_stack(tmp_path / "one.tif"), grey[:1, ..., None])


def test_planar_tiff_is_returned_channels_last(tmp_path):
    rgb = _marked(3)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), rgb)


@pytest.mark.parametrize("name,stem", [("ct_01.nii.gz", "ct_01"), ("slide.ome.tif", "slide"),
                                       ("a.b.PNG", "a.b"), ("scan.tiff", "scan"), ("x.nii", "x")])
def test_case_stem_strips_the_whole_image_suffix(name, stem):
    assert case_stem(f"/data/{name}") == stem


def test_suffix_tuples():
    assert {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"} <= set(IMAGE_SUFFIXES)
    assert ".png" in MASK_SUFFIXES and ".gif" in MASK_SUFFIXES
    assert VOLUME_SUFFIXES == (".nii", ".nii.gz")


# ------------------------------------------------------------------------------------------------ error cases


def _png_bytes() -> bytes:
    ok, encoded = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    return encoded.tobytes()


ERROR_FILES = {  # name -> (content, words expected in the message)
    "empty.png": (b"", "empty"),
    "truncated.png": (_png_bytes()[:500], "truncated"),
    "notes.png": (b"this is a text file, not an image\n", "not a PNG"),
    "really_jpeg.png": (cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes(), "holds JPEG"),
    "truncated.tif": (b"II*\x00\x08\x00\x00\x00\x05\x00", "truncated"),
    "notes.txt": (b"text", "unsupported suffix '.txt'"),
    "volume.nii.gz": (b"\x1f\x8b", "unsupported suffix '.nii.gz'"),
}
HEADER_ERRORS = {**ERROR_FILES, "volume.nii.gz": (b"\x1f\x8b", "truncated")}  # image_info reads volumes too


def _error_cases():
    """(reader, file name, expected words): every bad file for every reader, except a body image_info skips."""
    cases = [(reader, name, ERROR_FILES[name][1]) for reader in (read_image, read_mask) for name in ERROR_FILES]
    return cases + [(image_info, name, words) for name, (_, words) in HEADER_ERRORS.items()
                    if name != "truncated.png"]


@pytest.mark.parametrize("reader,name,words", _error_cases())
def test_bad_files_raise_image_read_error_naming_the_file(tmp_path, reader, name, words):
    path = tmp_path / name
    path.write_bytes(ERROR_FILES[name][0])
    with pytest.raises(ImageReadError, match=words) as caught:
        reader(path)
    assert str(path) in str(caught.value)


def test_header_info_does_not_decode_the_body(tmp_path):
    path = tmp_path / "truncated.png"
    path.write_bytes(ERROR_FILES["truncated.png"][0])
    assert image_info(path) == dict(height=64, width=64, channels=1, dtype="uint8", depth=1)


def test_missing_file_and_multi_page_image_are_explained(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((3, H, W), np.uint8), photometric="minisblack")
    with pytest.raises(ImageReadError, match="holds 3 slices, not one 2D image; pair it with a multi-page image"):
        read_image(tmp_path / "pages.tif")


def test_jpeg_mask_write_is_refused(tmp_path):
    path = tmp_path / "mask.jpg"
    with pytest.raises(ImageReadError, match="lossy") as caught:
        write_mask(path, np.zeros((H, W), np.uint8))
    assert str(path) in str(caught.value) and not path.exists()


def test_unsupported_channel_count_is_explained(tmp_path):
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, np.zeros((H, W, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match="5 samples per pixel, not greyscale .* no channel axis"):
        read_image(path)
    tifffile.imwrite(path, np.zeros((5, H, W), np.uint8), metadata={"axes": "CYX"})  # named channels
    assert read_image(path).shape == (H, W, 5)


def test_grey_jpeg_mask_is_read_as_labels(tmp_path):
    path = tmp_path / "mask.jpg"
    assert cv2.imwrite(str(path), np.zeros((H * 8, W * 8), np.uint8))
    mask = read_mask(path)
    assert mask.shape == (H * 8, W * 8) and mask.dtype == np.uint8 and is_lossy(path)


def test_names_without_an_image_suffix_are_refused(tmp_path):
    with pytest.raises(ImageReadError, match="notes.txt"):
        case_stem(tmp_path / "notes.txt")
    with pytest.raises(ImageReadError, match="unsupported suffix '.png' for an image stack"):
        read_stack(tmp_path / "slice.png")
