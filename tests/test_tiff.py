"""Compressed and tiled TIFFs as microscopy, pathology and fundus labs store them: every compression tifffile writes
is read back through the usual readers (images, masks, stacks, regions of interest), and a TIFF that cannot be read
is explained (a codec that is not installed, a truncated file, a file that is no TIFF), never called corrupt."""

import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import REPO, build_manifest
from unetflow.data.ingest import DataValidationError
from unetflow.io.formats import ImageReadError
from unetflow.io.images import image_info, is_lossy_mask, read_image, read_mask, read_stack
from unetflow.io.sources import read_source_roi

LOSSLESS = ["lzw", "zlib", "packbits", "zstd", "lzma"]
COMPRESSIONS = LOSSLESS + ["jpeg"]
TILES = [None, (16, 16)]
H, W = 48, 64


def ramp(shape, dtype=np.uint8) -> np.ndarray:
    """Smooth, non-constant pixels (JPEG keeps them close) with a distinct value at (1, 5)."""
    y, x = np.mgrid[:shape[0], :shape[1]]
    top = np.iinfo(dtype).max
    array = ((y * 3 + x * 2) * (top // 400)).astype(dtype)
    array = np.broadcast_to(array[..., None], shape).copy() if len(shape) == 3 else array
    array[1, 5] = top // 2
    return array


def blob_mask() -> np.ndarray:
    """A 0/255 mask with two filled rectangles (large flat areas: JPEG keeps them on the right side of 128)."""
    mask = np.zeros((H, W), np.uint8)
    mask[8:24, 8:30] = 255
    mask[30:44, 36:60] = 255
    return mask


def write(path, array, compression, tile, **options):
    """Write `array` compressed (and tiled) with tifffile; return the path."""
    photometric = "rgb" if array.ndim == 3 and array.shape[-1] == 3 else "minisblack"
    tifffile.imwrite(path, array, compression=compression, tile=tile, photometric=photometric, **options)
    return path


def assert_read_back(read, written, compression):
    """Lossless compressions give the written pixels exactly, JPEG pixels close to them."""
    assert read.shape == written.shape and read.dtype == written.dtype
    if compression == "jpeg":
        assert np.abs(read.astype(int) - written.astype(int)).mean() < 3
    else:
        np.testing.assert_array_equal(read, written)


@pytest.mark.parametrize("tile", TILES, ids=["strips", "tiles"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressed_images_are_read_back(tmp_path, compression, tile):
    grey, rgb = ramp((H, W)), ramp((H, W, 3))
    path = write(tmp_path / "grey.tif", grey, compression, tile)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression != tifffile.COMPRESSION.NONE and tif.pages[0].is_tiled == (tile is not None)
    assert_read_back(read_image(path)[..., 0], grey, compression)
    assert image_info(path) == dict(height=H, width=W, channels=1, dtype="uint8", depth=1)
    assert_read_back(read_image(write(tmp_path / "rgb.tif", rgb, compression, tile)), rgb, compression)


@pytest.mark.parametrize("tile", TILES, ids=["strips", "tiles"])
@pytest.mark.parametrize("compression", LOSSLESS)
def test_compressed_16_bit_stacks_and_masks_are_read_exactly(tmp_path, compression, tile):
    stack = np.stack([ramp((H, W), np.uint16) + page for page in range(3)])
    read = read_stack(write(tmp_path / "stack.tif", stack, compression, tile))
    np.testing.assert_array_equal(read[..., 0], stack)
    labels = (np.arange(H * W).reshape(H, W) % 700).astype(np.uint16)
    np.testing.assert_array_equal(read_mask(write(tmp_path / "labels.tif", labels, compression, tile)), labels)
    assert not is_lossy_mask(tmp_path / "labels.tif")


@pytest.mark.parametrize("compression", ["packbits", "lzw", "zlib"])
def test_compressed_one_bit_masks_give_white_as_255(tmp_path, compression):
    bits = blob_mask() > 0
    path = write(tmp_path / "bits.tif", bits, compression, None)
    np.testing.assert_array_equal(read_mask(path), blob_mask())


@pytest.mark.parametrize("tile", TILES, ids=["strips", "tiles"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressed_data_set_ingests_with_stacks_and_rois(tmp_path, compression, tile):
    for folder in ("images", "masks", "rois"):
        (tmp_path / folder).mkdir()
    write(tmp_path / "images" / "slide.tif", ramp((H, W, 3)), compression, tile)
    write(tmp_path / "images" / "stack.tif", np.stack([ramp((H, W))] * 2), compression, tile)
    roi = np.zeros((H, W), np.uint8)
    roi[4:40, 4:60] = 255
    for name, pages in (("slide", 1), ("stack", 2)):
        mask = np.stack([blob_mask()] * pages) if pages > 1 else blob_mask()
        write(tmp_path / "masks" / f"{name}.tif", mask, compression, tile)
        write(tmp_path / "rois" / f"{name}_roi.tif", np.stack([roi] * pages) if pages > 1 else roi, compression, tile)
    options = dict(images=str(tmp_path / "images"), masks=str(tmp_path / "masks"), rois=str(tmp_path / "rois"),
                   channels=3)
    if compression == "jpeg":  # lossy masks: refused unless snapped to declared classes
        with pytest.raises(DataValidationError, match="slide.tif: the TIFF mask is compressed with JPEG"):
            build_manifest(**options)
        options.update(lossy_masks="snap", classes={"background": 0, "cell": 255})
    manifest, classes = build_manifest(**options)
    assert manifest["id"].tolist() == ["slide", "stack"] and manifest["slices"].tolist() == [1, 2]
    assert classes["value"].tolist() == [0, 255]
    expected = np.mean(blob_mask() > 0)
    assert np.allclose([dict(zip(v, f))[255] for v, f in zip(manifest["label_values"], manifest["label_fractions"])],
                       expected)
    np.testing.assert_array_equal(read_source_roi(manifest.iloc[0].to_dict())[0],
                                  roi > (128 if compression == "jpeg" else 0))
    assert read_source_roi(manifest.iloc[1].to_dict()).shape == (2, H, W)  # a stack's ROI, page by page


# ------------------------------------------------------------------------------------- what cannot be read


def compressed_file(tmp_path, compression="lzw") -> str:
    return str(write(tmp_path / f"{compression}.tif", ramp((H, W)), compression, None))


def test_missing_codec_names_the_compression_and_imagecodecs(tmp_path):
    path = compressed_file(tmp_path)
    code = (f"import sys; sys.modules['imagecodecs'] = None\n"
            f"from unetflow.io.images import read_image\nread_image({path!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            cwd=REPO / "workflow" / "scripts")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "ImageReadError" in message and path in message
    assert "compressed with LZW (TIFF compression 5)" in message and "install imagecodecs" in message
    assert "corrupt" not in message and "damaged" not in message


def test_unknown_compression_is_named_not_called_corrupt(tmp_path):
    path = compressed_file(tmp_path)
    data = bytearray(open(path, "rb").read())
    entry = data.find(struct.pack("<HHIH", 259, 3, 1, 5))  # the Compression tag: SHORT, one value, LZW
    data[entry + 8:entry + 10] = struct.pack("<H", 12345)
    open(path, "wb").write(bytes(data))
    for reader in (image_info, read_image, read_mask):
        with pytest.raises(ImageReadError) as error:
            reader(path)
        assert "compressed with unknown compression 12345" in str(error.value)
        assert "corrupt" not in str(error.value) and "damaged" not in str(error.value)


def test_truncated_compressed_tiff_is_called_truncated(tmp_path):
    path = compressed_file(tmp_path, "zlib")
    data = open(path, "rb").read()
    with tifffile.TiffFile(path) as tif:
        end = tif.pages[0].dataoffsets[-1] + tif.pages[0].databytecounts[-1] // 2
    open(path, "wb").write(data[:end])  # the tags are intact and point at pixel data beyond the end
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError, match="the file is truncated") as error:
            reader(path)
        assert "corrupt" not in str(error.value)


def test_text_file_named_tif_is_not_an_image(tmp_path):
    path = tmp_path / "scan.tif"
    path.write_text("<html>moved</html>")
    with pytest.raises(ImageReadError, match="scan.tif: not a TIFF file"):
        read_image(path)


def test_ingest_reports_a_missing_codec_beside_other_problems(tmp_path, monkeypatch):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    write(tmp_path / "images" / "a.tif", ramp((H, W)), "zstd", (16, 16))
    write(tmp_path / "masks" / "a.tif", blob_mask(), "zstd", (16, 16))
    write(tmp_path / "images" / "b.tif", ramp((H, W)), None, None)
    write(tmp_path / "masks" / "b.tif", blob_mask(), None, None)
    (tmp_path / "images" / "c.tif").write_bytes(b"")
    write(tmp_path / "masks" / "c.tif", blob_mask(), None, None)
    without_zstd = {code: tifffile.TIFF.DECOMPRESSORS[code] for code in (1, 8)}  # an installation without zstd
    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS", without_zstd)
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    message = str(error.value)
    assert message.startswith("2 problem(s)") and "c.tif: the file is empty" in message
    assert "a.tif: the TIFF pixels are compressed with ZSTD (TIFF compression 50000)" in message
    assert "corrupt" not in message


def test_extra_samples_of_a_grey_tiff_are_channels_and_rgb_alpha_is_dropped(tmp_path):
    from unetflow.io.images import read_image

    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "four.tif", pixels, photometric="minisblack", planarconfig="contig")
    with pytest.raises(ImageReadError, match="4 samples per pixel, not greyscale"):
        read_image(tmp_path / "four.tif")
    tifffile.imwrite(tmp_path / "rgba.tif", pixels, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.tif"), pixels[..., :3])
    tifffile.imwrite(tmp_path / "rgbx.tif", pixels, photometric="rgb", extrasamples=["unspecified"])
    np.testing.assert_array_equal(read_image(tmp_path / "rgbx.tif"), pixels[..., :3])


def test_a_two_page_tiff_without_axes_paired_with_a_png_mask_is_named_a_stack(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "c07.tif", np.stack([ramp((H, W))] * 2))  # two channels, no axes said
    cv2.imwrite(str(tmp_path / "masks" / "c07.png"), blob_mask())
    with pytest.raises(DataValidationError, match=r"c07.png: the image c07.tif is read as a stack of pages .* "
                                                  r"save the image with its axes \(ImageJ or OME"):
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))


def test_an_imagej_hyperstack_of_two_channels_is_read_as_two_channels(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (5, 2, H, W), dtype=np.uint16)  # nuclei and membranes
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "c1.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "masks" / "c1.tif", np.stack([blob_mask()] * 5), imagej=True, metadata={"axes": "ZYX"})
    assert image_info(tmp_path / "images" / "c1.tif")["channels"] == 2
    np.testing.assert_array_equal(read_stack(tmp_path / "images" / "c1.tif"), np.moveaxis(stack, 1, -1))
    manifest, _ = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert manifest[["kind", "slices", "channels"]].values.tolist() == [["stack", 5, 2]]


def test_the_colour_map_of_an_imagej_file_only_colours_its_display(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    green = np.zeros((3, 256), np.uint16)
    green[1] = np.arange(256) * 257  # Fiji's "Green" LUT, saved as a palette TIFF
    tifffile.imwrite(tmp_path / "lut.tif", grey, imagej=True, photometric="palette", colormap=green,
                     metadata={"axes": "ZYX"})
    np.testing.assert_array_equal(read_stack(tmp_path / "lut.tif"), grey[..., None])
    tifffile.imwrite(tmp_path / "indexed.tif", grey[0], photometric="palette", colormap=green)  # not ImageJ's
    np.testing.assert_array_equal(read_image(tmp_path / "indexed.tif")[..., 1], grey[0])


@pytest.mark.parametrize("shape, axes, named", [((3, 4, 16, 16), "TZYX", "(T 3, Z 4)"),
                                                ((5, 2, 16, 16), None, "(Q 5, Q 2)")], ids=["time-lapse", "unnamed"])
def test_planes_stacked_along_two_axes_are_refused_naming_them(tmp_path, shape, axes, named):
    options = dict(imagej=True, metadata={"axes": axes}) if axes else {}
    tifffile.imwrite(tmp_path / "t.tif", np.zeros(shape, np.uint8), **options)
    with pytest.raises(ImageReadError) as error:
        image_info(tmp_path / "t.tif")
    assert f"stack the 2D planes along more than one axis {named}" in str(error.value)
    assert "Save one file per time point" in str(error.value) and "damaged" not in str(error.value)


@pytest.mark.parametrize("options", [dict(imagej=True, resolution=(5, 5), metadata={"axes": "ZYX", "spacing": 1.0,
                                                                                     "unit": "micron"}),
                                     dict(metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
                                                    "PhysicalSizeZ": 1.0})], ids=["imagej", "ome"])
def test_masks_written_for_a_calibrated_stack_keep_its_voxel_size(tmp_path, options):
    from unetflow.io.prediction_files import write_source_labels

    image = tmp_path / ("c.tif" if "imagej" in options else "c.ome.tif")
    tifffile.imwrite(image, np.zeros((4, H, W), np.uint16), **options)
    row = dict(kind="stack", image_path=str(image))
    with tifffile.TiffFile(write_source_labels(tmp_path / "m.tif", np.ones((4, H, W), np.uint8), row)) as written:
        assert written.pages.first.resolution == (5, 5) and written.series[0].axes == "ZYX"
        assert {key: written.imagej_metadata[key] for key in ("spacing", "unit")} == dict(spacing=1.0, unit="micron")
    ids = np.full((4, H, W), 70000, np.uint32)  # more ids than ImageJ's 16 bits: px per cm in the TIFF tags
    with tifffile.TiffFile(write_source_labels(tmp_path / "i.tif", ids, row, limit=2 ** 32 - 1)) as written:
        assert written.pages.first.resolution == (50000, 50000) and written.pages.first.resolutionunit == 3


def test_a_mask_written_for_a_tiff_keeps_its_resolution_tags(tmp_path):
    from unetflow.io.prediction_files import write_source_labels

    tifffile.imwrite(tmp_path / "p.tif", ramp((H, W)), resolution=(300, 300), resolutionunit=2)  # 300 dpi
    row = dict(kind="image", image_path=str(tmp_path / "p.tif"))
    with tifffile.TiffFile(write_source_labels(tmp_path / "m.tif", np.ones((1, H, W), np.uint8), row)) as written:
        assert written.pages.first.resolution == (300, 300) and written.pages.first.resolutionunit == 2
    cv2.imwrite(str(tmp_path / "p.png"), ramp((H, W)))
    png = dict(row, image_path=str(tmp_path / "p.png"))
    with tifffile.TiffFile(write_source_labels(tmp_path / "n.tif", np.ones((1, H, W), np.uint8), png)) as written:
        assert written.pages.first.resolution == (1, 1)  # tifffile's default: a PNG's pixel size is not read


def test_a_stack_saved_one_file_per_slice_is_named_as_such(tmp_path):
    for kind, pixels in (("images", ramp((H, W))), ("masks", blob_mask())):
        (tmp_path / kind / "s08").mkdir(parents=True)
        for index in range(4):  # one file per slice, in a folder per stack
            cv2.imwrite(str(tmp_path / kind / "s08" / f"z{index:02d}.png"), pixels)
        cv2.imwrite(str(tmp_path / kind / "c1.png"), pixels)
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert "s08: mask without an image" in str(error.value)
    assert "it is a folder, read as one mask file per object: if it holds the slices of a stack" in str(error.value)


@pytest.mark.parametrize("unit", ["micron", "\\u00B5m"], ids=["micron", "fiji"])  # Fiji writes µm as \u00B5m
def test_a_tiff_stating_another_pixel_size_than_the_others_is_warned_about(tmp_path, caplog, unit):
    from unetflow.data.data_warnings import data_warnings, log_warnings

    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    for name, per_micron in (("a", 5), ("b", 5), ("c", 5), ("coarse", 1), ("fine", 10)):  # 0.2 µm, one 1 and 0.1
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", ramp((H, W)), imagej=True, resolution=(per_micron,) * 2,
                         metadata={"unit": unit})
        tifffile.imwrite(tmp_path / "masks" / f"{name}.tif", blob_mask())
    for name, per_centimetre in (("print300", 118.11), ("print72", 28.35)):  # dpi saved in centimetres: not compared
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", ramp((H, W)), resolution=(per_centimetre,) * 2,
                         resolutionunit=3)
        tifffile.imwrite(tmp_path / "masks" / f"{name}.tif", blob_mask())
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    rows = data_warnings(manifest, classes).query("kind == 'pixel_size'")
    assert [Path(file).name for file in rows["file"]] == ["coarse.tif", "fine.tif"]
    assert rows["value"].tolist() == [5.0, 0.5]
    with caplog.at_level("WARNING"):
        log_warnings(rows)
    assert "2 TIFF image(s) stating another pixel size than the others (e.g. images/coarse.tif: 1 µm per pixel, " \
           "5.00 times the median 0.2 µm; images/fine.tif: 0.1 µm per pixel, 0.50 times the median 0.2 µm)" \
        in caplog.text


def test_a_time_lapse_keeps_its_frames_in_its_masks(tmp_path):
    from unetflow.io.prediction_files import write_source_labels

    image = tmp_path / "t.tif"
    tifffile.imwrite(image, np.zeros((6, H, W), np.uint8), imagej=True, resolution=(1, 1),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 30.0})  # 1 µm pixels, a frame per 30 s
    row = dict(kind="stack", image_path=str(image))
    with tifffile.TiffFile(write_source_labels(tmp_path / "m.tif", np.ones((6, H, W), np.uint8), row)) as written:
        assert written.series[0].axes == "TYX" and written.pages.first.resolution == (1, 1)
        assert {key: written.imagej_metadata.get(key) for key in ("unit", "finterval", "frames")} == dict(
            unit="micron", finterval=30.0, frames=6)


def test_infer_names_tiffs_of_another_pixel_size_than_the_training_images(tmp_path):
    from test_infer import make_package

    from unetflow.data.data_warnings import data_warnings
    from unetflow.infer.infer import check_images, check_notes
    from unetflow.infer.package import load_package, tiff_pixel_size

    paths = []
    for name, per_micron in (("a", 5), ("b", 5), ("fine", 10), ("plain", None)):
        paths.append(tmp_path / f"{name}.tif")
        options = dict(imagej=True, resolution=(per_micron,) * 2, metadata={"unit": "micron"}) if per_micron else {}
        tifffile.imwrite(paths[-1], ramp((H, W)), **options)
    assert tiff_pixel_size(pd.DataFrame({"image_path": list(map(str, paths[:2]))})) == pytest.approx(0.2)
    package = load_package(make_package(tmp_path))
    assert check_notes(check_images(paths, package)) == []  # trained on PNGs: no pixel size to compare with
    package.training_data["tiff_pixel_size"] = 0.2
    notes = check_notes(check_images(paths, package))
    assert notes == ["1 image(s) (fine.tif: 0.50 times) state another pixel size than the model's training images: "
                     "the model segments pixels as they are, so objects look larger or smaller to it than in "
                     "training; resample them to the training images' pixel size for the masks it was trained to give"]
    deep = tmp_path / "deep.tif"  # anisotropic pixels (OCT): the width as trained, half the height
    tifffile.imwrite(deep, ramp((H, W)), imagej=True, resolution=(5, 10), metadata={"unit": "micron"})
    package.training_data["tiff_pixel_height"] = 0.2
    assert check_images([deep], package)["pixel_size_ratio"].tolist() == [pytest.approx(0.5)]
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    for path in [*paths[:2], deep]:
        (tmp_path / "images" / path.name).write_bytes(path.read_bytes())
        tifffile.imwrite(tmp_path / "masks" / path.name, blob_mask())
    manifest, classes = build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    rows = data_warnings(manifest, classes).query("kind == 'pixel_size'")
    assert rows["detail"].tolist() == ["0.1 µm per pixel in height, 0.50 times the median 0.2 µm"]


def test_hyperstacks_of_other_channel_counts_are_not_offered_a_colour_conversion(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    for name, channels in (("a", 2), ("b", 2), ("c", 4)):
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", np.zeros((3, channels, H, W), np.uint16), imagej=True,
                         metadata={"axes": "ZCYX"})
        tifffile.imwrite(tmp_path / "masks" / f"{name}.tif", np.stack([blob_mask()] * 3), imagej=True,
                         metadata={"axes": "ZYX"})
    with pytest.raises(DataValidationError) as error:
        build_manifest(str(tmp_path / "images"), str(tmp_path / "masks"))
    assert "c.tif: 4 channel(s) where 2 of 3 of the data set's images have 2; every image needs the same channels" \
        in str(error.value) and "data.channels" not in str(error.value)
