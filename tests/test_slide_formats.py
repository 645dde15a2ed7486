"""Whole-slide scanner formats (`unetflow.io.slide_backends`): Aperio SVS and Hamamatsu NDPI read by tifffile with
their levels and pixel size, MRXS through OpenSlide, and the messages when OpenSlide is missing or cannot open it."""

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_slides import predictor, slide_pixels, write_slide  # noqa: F401 (predictor: a fixture)

from unetflow.data.infer_images import listed_images
from unetflow.infer.slide import predict_slides
from unetflow.io.formats import ImageReadError, case_stem
from unetflow.io.slides import Slide, is_slide

LOSSLESS = dict(tile=(256, 256), compression="zlib", photometric="rgb", metadata=None)
STEPS = (1, 2, 4)


def aperio(size: tuple[int, int], reduced: str = "") -> str:
    """An Aperio ImageDescription of a 0.25 µm slide (`reduced`: ' -> WxH' of a thumbnail or level)."""
    return (f"Aperio Image Library v12.0.15\r\n{size[1]}x{size[0]} [0,0 {size[1]}x{size[0]}] (256x256){reduced} "
            f"JPEG/RGB Q=70|AppMag = 40|MPP = 0.2500|Filename = s")


def write_svs(path: Path, pixels: np.ndarray, levels: list[np.ndarray] | None = None) -> Path:
    """An Aperio-style SVS: the base (tiled), a stripped thumbnail, the levels /2 and /4 (tiled; `levels`, default
    every 2nd and 4th pixel), losslessly compressed so that what is read back equals what was written."""
    with tifffile.TiffWriter(path) as writer:
        writer.write(pixels, description=aperio(pixels.shape), **LOSSLESS)
        thumbnail = pixels[::16, ::16]
        writer.write(thumbnail, description=aperio(pixels.shape, f" -> {thumbnail.shape[1]}x{thumbnail.shape[0]} -"),
                     photometric="rgb", metadata=None)
        for level in levels or [pixels[::step, ::step] for step in STEPS[1:]]:
            writer.write(level, description=aperio(pixels.shape, f" -> {level.shape[1]}x{level.shape[0]}"),
                         **LOSSLESS)
    return path


def write_ndpi(path: Path, pixels: np.ndarray) -> Path:
    """A pyramid tagged as Hamamatsu writes it (NDPI marker tag 65420, Make, magnification; resolution in cm, 0.25
    µm), each level a page of its own."""
    ndpi = [(65420, "I", 1, 1, True), (65421, "f", 1, 40.0, True), (271, "s", 0, "Hamamatsu", True)]
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for step in STEPS:
            writer.write(pixels[::step, ::step], resolution=(40000 / step, 40000 / step), resolutionunit="CENTIMETER",
                         extratags=ndpi, **LOSSLESS)
    return path


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return slide_pixels()


@pytest.mark.parametrize("writer, name", [(write_svs, "s.svs"), (write_ndpi, "s.ndpi")])
def test_scanner_slides_are_read_by_region_with_their_levels_and_pixel_size(tmp_path, pixels, writer, name):
    path = writer(tmp_path / name, pixels)
    assert is_slide(path)
    with Slide(path) as slide:
        assert [level.shape for level in slide.levels] == [(1024, 1536), (512, 768), (256, 384)]
        assert [level.pixel_size for level in slide.levels] == pytest.approx([0.25, 0.5, 1.0])
        assert slide.channels == 3
        for index, step in enumerate(STEPS):
            expected = np.moveaxis(pixels[::step, ::step][100:160, 200:290], -1, 0)
            np.testing.assert_array_equal(slide.read_region(index, 100, 200, 60, 90), expected)
        np.testing.assert_array_equal(slide.overview(max_pixels=10_000), np.moveaxis(pixels[::16, ::16], -1, 0))


def test_an_svs_is_segmented_as_the_same_pixels_in_an_ome_tiff(tmp_path, pixels, predictor):  # noqa: F811
    ome = write_slide(tmp_path / "b.ome.tif", pixels)
    with Slide(ome) as slide:  # the OME-TIFF's levels are JPEG: the SVS holds their decoded pixels, losslessly
        decoded = [np.moveaxis(slide.read_region(index, 0, 0, *level.shape), 0, -1)
                   for index, level in enumerate(slide.levels)]
    svs = write_svs(tmp_path / "a.svs", decoded[0], decoded[1:])
    rows = predict_slides(predictor, [svs, ome], tmp_path / "out", pixel_size=2.0, region=64).set_index("id")
    assert rows.loc["a", ["level", "factor"]].tolist() == [2, 2]
    with Slide(rows.loc["a", "mask_path"]) as a, Slide(rows.loc["b", "mask_path"]) as b:
        labels = a.read_region(0, 0, 0, 128, 192)
        assert labels.any()
        np.testing.assert_array_equal(labels, b.read_region(0, 0, 0, 128, 192))


def test_an_mrxs_slide_is_read_through_openslide(tmp_path, pixels):
    # no MRXS writer exists; OpenSlide recognises a file by its content, so an SVS named .mrxs takes the MRXS path
    path = write_svs(tmp_path / "s.mrxs", pixels)
    assert is_slide(path)
    with Slide(path) as slide:
        assert type(slide.reader).__name__ == "OpenSlideReader"
        assert [level.shape for level in slide.levels] == [(1024, 1536), (512, 768), (256, 384)]
        assert [level.pixel_size for level in slide.levels] == pytest.approx([0.25, 0.5, 1.0])
        np.testing.assert_array_equal(slide.read_region(1, 100, 200, 60, 90),
                                      np.moveaxis(pixels[::2, ::2][100:160, 200:290], -1, 0))
        assert slide.read_region(2, 250, 380, 50, 50).shape == (3, 6, 4)  # clipped to the level
        np.testing.assert_array_equal(slide.overview(max_pixels=10_000), np.moveaxis(pixels[::16, ::16], -1, 0))


def test_an_mrxs_slide_without_openslide_names_the_package_not_the_file(tmp_path, pixels, monkeypatch):
    path = write_svs(tmp_path / "s.mrxs", pixels)
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide now raises ImportError
    with pytest.raises(ImageReadError, match=r"s.mrxs: MRXS \(3DHISTECH\) slides are read by OpenSlide, which is not "
                                             r"installed here; pip install openslide-python openslide-bin"):
        Slide(path)


def test_an_mrxs_file_without_its_data_folder_says_so(tmp_path):
    (tmp_path / "s.mrxs").write_text("[GENERAL]\n")
    with pytest.raises(ImageReadError, match=r"s.mrxs: OpenSlide cannot open it as an MRXS .*the folder of the same "
                                             r"name beside it"):
        Slide(tmp_path / "s.mrxs")


def test_scanner_files_are_listed_for_segmentation_and_named_by_their_stem(tmp_path):
    for name in ("a.svs", "b.NDPI", "c.mrxs", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in listed_images(str(tmp_path))] == ["a.svs", "b.NDPI", "c.mrxs"]
    assert [case_stem(path) for path in listed_images(str(tmp_path))] == ["a", "b", "c"]
