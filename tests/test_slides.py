"""Whole-slide images: lazy reading of pyramidal (OME-)TIFFs by region, the choice of the level, region-by-region
prediction equal to predicting the whole level at once, background skipping, the label pyramid and the summary (where
the tissue lies: test_slide_tissue.py)."""

import copy
import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from test_infer import make_package
from test_polygons import rasterised

from conftest import applied
from unetflow.infer.infer import main as infer_main
from unetflow.infer.infer import scale_problem
from unetflow.infer.predictor import Predictor
from unetflow.infer.slide import (
    NOT_PREDICTED,
    SlideError,
    SlidePredictor,
    part_rows,
    predict_slides,
    slide_normalizer,
    slide_row,
    tile_steps,
)
from unetflow.io.calibration import ome_pixel_sizes
from unetflow.io.formats import ImageReadError
from unetflow.io.slide_labels import write_label_pyramid
from unetflow.io.slides import Slide, block_mean, choose_level, is_slide

WINDOW = applied("window", window=[0, 255])  # needs no per-image statistics: equal on regions and whole levels
SIZE = (1024, 1536)  # base level; levels at 0.25, 0.5 and 1 µm


def slide_pixels(tissue_fraction: float = 0.625, seed: int = 0) -> np.ndarray:
    """A base level (H, W, 3) uint8: white glass, and tissue (textured pink) in the left `tissue_fraction`."""
    rng = np.random.default_rng(seed)
    pixels = np.full((*SIZE, 3), 240, np.uint8)
    width = int(SIZE[1] * tissue_fraction)
    shade = rng.uniform(0.5, 1, (SIZE[0] // 8, width // 8, 1)).repeat(8, 0).repeat(8, 1)
    pixels[:, :width] = (shade * [220, 120, 190]).astype(np.uint8)
    return pixels


def write_slide(path: Path, pixels: np.ndarray, ome: bool = True, resolution: bool = True) -> Path:
    """A JPEG-tiled pyramid (SubIFDs at /2 and /4): OME with PhysicalSize or plain TIFF with resolution tags."""
    options = dict(tile=(256, 256), compression="jpeg", photometric="rgb")
    if resolution:
        options.update(resolution=(40000, 40000), resolutionunit="CENTIMETER")  # 0.25 µm
    metadata = {"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25} if ome and resolution else {}
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as writer:
        writer.write(pixels, subifds=2, metadata=metadata if ome else None, **options)
        for step in (2, 4):
            options.pop("resolution", None), options.pop("resolutionunit", None)
            writer.write(pixels[::step, ::step], subfiletype=1, **options)
    return path


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory) -> Path:
    return write_slide(tmp_path_factory.mktemp("slide") / "s.ome.tif", slide_pixels())


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    predictor = Predictor.load(make_package(tmp_path_factory.mktemp("pkg"), channels=3, preprocess=WINDOW), "cpu")
    predictor.package.predict.update(mirror=False, batch_size=32)  # fast; the tiling is as with mirroring
    return predictor


# ---------------------------------------------------------------------------------------------------- reading

@pytest.mark.parametrize("ome", [True, False])
def test_levels_and_pixel_size_come_from_ome_or_tiff_resolution(tmp_path, ome):
    path = write_slide(tmp_path / "s.tif", slide_pixels(), ome=ome)
    assert is_slide(path)
    with Slide(path) as slide:
        assert [level.shape for level in slide.levels] == [(1024, 1536), (512, 768), (256, 384)]
        assert [level.pixel_size for level in slide.levels] == pytest.approx([0.25, 0.5, 1.0])
        assert slide.channels == 3


def test_a_region_is_read_without_decoding_the_slide(slide_path):
    with tifffile.TiffFile(slide_path) as tif:
        level1 = tif.series[0].levels[1].asarray()
    with Slide(slide_path) as slide:
        region = slide.read_region(1, 100, 300, 50, 70)
        assert region.shape == (3, 50, 70)
        np.testing.assert_array_equal(region, np.moveaxis(level1[100:150, 300:370], -1, 0))
        assert slide.read_region(1, 500, 760, 50, 50).shape == (3, 12, 8)  # clipped to the level
        smallest = slide.read_region(2, 0, 0, 256, 384)
        np.testing.assert_array_equal(slide.overview(max_pixels=10_000), smallest[:, ::4, ::4])
        assert slide.overview().shape == (3, 256, 384)


def test_only_the_tiles_a_region_touches_are_decoded(tmp_path):
    path = write_slide(tmp_path / "s.ome.tif", slide_pixels())
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[0].keyframe
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]  # the bottom right tile of the base
    with open(path, "r+b") as file:
        file.seek(offset), file.write(b"\xff" * count)
    with Slide(path) as slide:
        assert slide.read_region(0, 0, 0, 300, 300).shape == (3, 300, 300)
        with pytest.raises(ImageReadError, match=r"s.ome.tif: .*TIFF"):
            slide.read_region(0, 1000, 1500, 10, 10)


def test_a_region_of_damaged_tiles_is_named_and_left_out_the_rest_predicted(predictor, tmp_path, caplog):
    path = write_slide(tmp_path / "s.ome.tif", slide_pixels(tissue_fraction=1.0))
    slides = SlidePredictor(predictor, region=128)
    clean = slides.predict(path, tmp_path / "clean.ome.tif", 0.5)
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[1].keyframe
        offset, count = page.dataoffsets[0], page.databytecounts[0]  # the top left tile of the 0.5 µm level
    with open(path, "r+b") as file:
        file.seek(offset), file.write(b"\xff" * count)
    with caplog.at_level(logging.WARNING, logger="unetflow.infer.slide"):
        damaged = slides.predict(path, tmp_path / "damaged.ome.tif", 0.5)
    # the 3 x 3 regions of 128 whose read box (+ a margin of 32) touches the 256-pixel tile, named by position
    assert len(caplog.records) == 9 and "rows 0-160, columns 0-160 of level 1" in caplog.text
    assert "s.ome.tif" in caplog.text and "damaged" in caplog.text  # the file and what is wrong with it
    before, after = tifffile.imread(clean["mask_path"]), tifffile.imread(damaged["mask_path"])
    assert (before[:384, :384] < NOT_PREDICTED).all() and (after[:384, :384] == NOT_PREDICTED).all()  # left out
    np.testing.assert_array_equal(after[384:], before[384:])  # the rest: as from the intact slide
    np.testing.assert_array_equal(after[:, 384:], before[:, 384:])


def test_a_plain_image_is_no_slide(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((64, 64), np.uint8))
    assert not is_slide(tmp_path / "flat.tif")


# ----------------------------------------------------------------------------------------------- level choice

def test_the_coarsest_level_fine_enough_and_whole_factors_are_chosen(slide_path, caplog):
    with Slide(slide_path) as slide:  # levels of 0.25, 0.5 and 1 µm
        assert [(level.index, factor) for level, factor in
                (choose_level(slide, size, "k") for size in (0.25, 0.5, 0.505, 1.0, 2.0, 4.0, 1.5))] == \
            [(0, 1), (1, 1), (1, 1), (2, 1), (2, 2), (2, 4), (1, 3)]  # 1.5: three blocks of the 0.5 µm level
        assert not caplog.records
        with caplog.at_level(logging.INFO):  # a scanner's pixel size: 2.1 µm read at 2, said so
            assert [(level.index, factor) for level, factor in [choose_level(slide, 2.1, "k")]] == [(2, 2)]
        assert "s.ome.tif: read at 2 µm per pixel (level 2 of 1 µm, 2 x 2 blocks), -4.8 % from the 2.1 µm" in \
            caplog.text
        with pytest.raises(ImageReadError, match=r"s.ome.tif: no level of pixel size 0.25, 0.5, 1 µm, nor a whole "
                                                 r"multiple of one, comes within 8% of k = 0.3 µm"):
            choose_level(slide, 0.3, "k")
        with pytest.raises(ImageReadError, match=r"s.ome.tif.*k is not set"):
            choose_level(slide, None, "k")


def test_a_grey_slide_for_a_colour_model_is_refused_before_any_prediction(tmp_path, predictor):
    grey = write_slide(tmp_path / "grey.ome.tif", slide_pixels()[..., :1].repeat(3, axis=-1))
    assert slide_row(grey, "grey", predictor.package, 1.0)[1] == []  # RGB: the model's channels
    with tifffile.TiffWriter(tmp_path / "fluo.ome.tif", bigtiff=True, ome=True) as writer:
        pixels = slide_pixels()[..., 0]
        writer.write(pixels, subifds=1, tile=(256, 256), metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        writer.write(pixels[::2, ::2], subfiletype=1, tile=(256, 256))
    row, problems = slide_row(tmp_path / "fluo.ome.tif", "fluo", predictor.package, 1.0)
    assert row["channels"] == 1 and len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'fluo.ome.tif'}: 1 channel(s), but the model was trained on 3-channel")


def test_a_plain_tiff_of_another_pixel_size_for_a_slide_model_is_refused(tmp_path, predictor):
    package = replace(predictor.package, training_data=dict(predictor.package.training_data, slide_pixel_size=2.0))
    pixels = slide_pixels()[:256, :256]
    for name, dpcm in (("fine.tif", 20000), ("near.tif", 5200)):  # 0.5 µm; 1.92 µm, within 8 % of 2
        tifffile.imwrite(tmp_path / name, pixels, tile=(128, 128), resolution=(dpcm, dpcm),
                         resolutionunit="CENTIMETER", photometric="rgb")
    assert scale_problem(tmp_path / "near.tif", package) is None
    assert scale_problem(tmp_path / "fine.tif", package).startswith(
        "0.5 µm per pixel (its metadata), but the model was trained on slides at 2 µm per pixel")
    assert scale_problem(tmp_path / "fine.tif", predictor.package) is None  # a model not trained on slides


def test_a_slide_without_pixel_size_is_refused_naming_the_file(tmp_path):
    path = write_slide(tmp_path / "bare.tif", slide_pixels(), ome=False, resolution=False)
    with Slide(path) as slide, pytest.raises(ImageReadError, match=r"bare.tif: the slide's metadata give no pixel"):
        choose_level(slide, 1.0, "k")


def test_block_mean_reduces_by_a_whole_factor():
    region = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    reduced = block_mean(region, 2)
    assert reduced.shape == (2, 3, 2)
    assert reduced[1, 0, 1] == region[1, :2, 2:].mean() and reduced[0, 2, 0] == region[0, 4, :2].mean()


# --------------------------------------------------------------------------------------------------- prediction

def test_region_by_region_equals_the_whole_level_and_skips_glass(slide_path, predictor, tmp_path, caplog,
                                                                  monkeypatch):
    monkeypatch.setattr("unetflow.infer.slide.PROGRESS_SECONDS", 0)  # a line after every region (but the last)
    with caplog.at_level(logging.INFO):
        summary = predict_slides(predictor, [slide_path], tmp_path, pixel_size=2.0, region=64)
    assert "s.ome.tif: tissue 62 % of the slide, the stained side of Otsu's threshold on the saturation" in caplog.text
    assert re.findall(r"s.ome.tif: (\d) of (\d) regions with tissue predicted in \d+ s", caplog.text) == \
        [("1", "4"), ("2", "4"), ("3", "4")]
    row = summary.iloc[0]
    assert (row["id"], row["level"], row["factor"], row["pixel_size_um"]) == ("s", 2, 2, 2.0)
    with Slide(row["mask_path"]) as labels:
        assert [level.shape for level in labels.levels] == [(128, 192)]
        assert labels.base_pixel_size == pytest.approx(2.0)
        written = labels.read_region(0, 0, 0, 128, 192)[0]
    with Slide(slide_path) as slide:
        level = block_mean(slide.read_region(2, 0, 0, 256, 384).astype(np.float32), 2)
    whole, _ = predictor.predict_array(np.moveaxis(level, 0, -1))
    assert len(np.unique(whole[:, :128])) == 2  # the untrained models predict both classes on tissue
    np.testing.assert_array_equal(written[:, :128], whole[:, :128])  # regions with tissue: as one job
    assert (written[:, 128:] == NOT_PREDICTED).all() and whole[:, 128:].any()  # glass-only regions: not predicted
    counted = row["pixels_background"] + row["pixels_cell"]  # the classes are counted within the tissue mask
    assert counted < 128 * 128 and counted * 4e-6 == pytest.approx(row["tissue_mm2"], rel=0.02)
    assert row["area_mm2_cell"] == pytest.approx(row["pixels_cell"] * 4e-6)
    assert row["tissue_mm2"] == pytest.approx(0.625 * 128 * 192 * 4e-6, rel=0.05)
    cells = json.loads(Path(row["geojson_path"]).read_text())["features"]  # QuPath's polygons, in base-level pixels
    assert [feature["properties"]["classification"]["name"] for feature in cells] == ["cell"]
    np.testing.assert_array_equal(rasterised(cells[0]["geometry"], written.shape, scale=8), written == 1)


def test_regions_are_aligned_to_the_tile_steps_with_a_margin_of_a_tile(predictor):
    assert tile_steps(predictor) == (16, 32)  # patch 32, overlap 0.5
    assert SlidePredictor(predictor, region=50).core == 64


def test_parts_of_rows_of_regions_merge_into_the_labels_of_one_part(slide_path, predictor, tmp_path):
    assert [part_rows(128, 64, part, 3) for part in range(3)] == [(0, 0), (0, 64), (64, 128)]  # 2 rows, 3 parts
    assert [part_rows(100, 32, part, 2) for part in range(2)] == [(0, 64), (64, 100)]  # the last row partial
    slides = SlidePredictor(predictor, region=32)  # 128 rows of 32: 4 rows of regions
    one = slides.merge(slide_path, [slides.predict_part(slide_path, tmp_path / "one.npy", 2.0)], tmp_path / "one.tif",
                       2.0)
    parts = [slides.predict_part(slide_path, tmp_path / f"p{part}.npy", 2.0, part, 3) for part in range(3)]
    assert [len(np.load(path)) for path in parts] == [32, 32, 64]
    three = slides.merge(slide_path, parts, tmp_path / "three.tif", 2.0)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "three.tif"), tifffile.imread(tmp_path / "one.tif"))
    assert {key: value for key, value in three.items() if not key.endswith("_path")} == \
        {key: value for key, value in one.items() if not key.endswith("_path")}
    with pytest.raises(ValueError, match="do not make up a label grid"):
        slides.merge(slide_path, parts[1:], tmp_path / "missing.tif", 2.0)


def unsuited(package, kind: str):
    """The package changed into one that cannot segment slides: 3D, whole-image postprocessing, or models of two
    resolutions."""
    if kind == "3D":
        return replace(package, models=[dict(model, hparams=dict(model["hparams"], dims=3))
                                        for model in package.models])
    if kind == "largest":
        return replace(package, predict=dict(package.predict, largest_component=True))
    return replace(package, models=[dict(model, resolution=0.5 + index) for index, model in enumerate(package.models)])


@pytest.mark.parametrize("kind, message", [("3D", "it holds 3D models"),
                                           ("largest", "predict.largest_component is a whole-image step"),
                                           ("resolutions", "its models were trained at different resolutions")])
def test_packages_that_cannot_segment_slides_are_refused_naming_the_file(predictor, kind, message):
    unsuitable = copy.copy(predictor)
    unsuitable.package = unsuited(predictor.package, kind)
    with pytest.raises(SlideError, match=rf"model.pt: {message}"):
        SlidePredictor(unsuitable)


def test_zscore_statistics_of_a_slide_come_from_its_smallest_level():
    overview = np.stack([np.arange(100, dtype=np.float32).reshape(10, 10), np.full((10, 10), 7, np.float32)])
    normalize = slide_normalizer(applied("zscore"), overview)
    region = np.full((2, 3, 3), 49.5, np.float32)
    np.testing.assert_allclose(normalize(region)[0], 0, atol=1e-6)
    np.testing.assert_allclose(normalize(overview)[0], (overview[0] - 49.5) / overview[0].std(), rtol=1e-5)


def test_the_label_pyramid_reads_back_with_its_pixel_size(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, (700, 900), dtype=np.uint8)
    write_label_pyramid(tmp_path / "l.ome.tif", labels, 0.5)
    with Slide(tmp_path / "l.ome.tif") as slide:
        assert [level.pixel_size for level in slide.levels] == pytest.approx([0.5, 1.0, 2.0])
        for index, step in enumerate((1, 2, 4)):
            np.testing.assert_array_equal(slide.read_region(index, 0, 0, 700, 900)[0], labels[::step, ::step])


def test_the_command_line_segments_slides_beside_images_and_names_the_missing_pixel_size(tmp_path):
    package = make_package(tmp_path, channels=3, preprocess=WINDOW)
    images = tmp_path / "in"
    images.mkdir()
    (images / "site").mkdir()
    write_slide(images / "site" / "s.ome.tif", slide_pixels())
    tifffile.imwrite(images / "flat.tif", np.full((40, 48, 3), 200, np.uint8), photometric="rgb")
    spec = f"{images}/**/*.tif"  # the slide in a sub-folder, the plain image beside it
    with pytest.raises(SystemExit, match=r"s.ome.tif: .*\(--slide-pixel-size on the command line\) is not set"):
        infer_main(["--model", str(package), "--input", spec, "--output", str(tmp_path / "none")])
    out = tmp_path / "out"
    infer_main(["--model", str(package), "--input", spec, "--output", str(out), "--slide-pixel-size", "4",
                "--slide-region", "32"])
    assert pd.read_parquet(out / "slides.parquet")["id"].tolist() == ["site/s"]  # laid out as the inputs
    assert (out / "site" / "s.ome.tif").exists() and (out / "site" / "s.geojson").exists()
    assert pd.read_parquet(out / "summary.parquet")["id"].unique().tolist() == ["flat"]


def test_every_slide_is_checked_before_any_is_predicted(slide_path, predictor, tmp_path):
    bare = write_slide(tmp_path / "bare.tif", slide_pixels(), ome=False, resolution=False)
    with pytest.raises(SlideError, match=r"1 slide\(s\) cannot be segmented:\n  - .*bare.tif: the slide's metadata"):
        predict_slides(predictor, [slide_path, bare], tmp_path / "out", 1.0)
    assert not (tmp_path / "out").exists()  # the readable slide first in the list was not predicted either


def test_ome_pixel_sizes_in_other_units_are_read_in_micrometres():
    xml = ('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image><Pixels PhysicalSizeX="5000" '
           'PhysicalSizeXUnit="Å" PhysicalSizeY="0.5" PhysicalSizeYUnit="μm"/></Image></OME>')  # Greek mu
    assert ome_pixel_sizes(xml) == pytest.approx([0.5, 0.5])


def test_a_slide_of_pixels_that_are_not_square_is_refused_naming_them(tmp_path):
    pixels = slide_pixels()
    with tifffile.TiffWriter(tmp_path / "wide.ome.tif", ome=True) as writer:
        writer.write(pixels, subifds=1, tile=(256, 256), photometric="rgb",
                     metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25})
        writer.write(pixels[::2, ::2], subfiletype=1, tile=(256, 256), photometric="rgb")
    with pytest.raises(ImageReadError, match=r"wide.ome.tif: pixels of 0.5 x 0.25 µm \(x, y\) .* square pixels only"):
        Slide(tmp_path / "wide.ome.tif")
    with Slide(write_slide(tmp_path / "square.ome.tif", pixels)) as square:
        assert square.base_pixel_size == pytest.approx(0.25)


def test_a_slide_of_several_channels_is_refused_naming_them(tmp_path):
    pixels = np.zeros((3, 512, 512), np.uint16)  # a fluorescence slide of three channels, CYX
    with tifffile.TiffWriter(tmp_path / "cyx.ome.tif", ome=True) as writer:
        writer.write(pixels, subifds=1, tile=(256, 256), metadata={"axes": "CYX", "PhysicalSizeX": 0.5})
        writer.write(pixels[:, ::2, ::2], subfiletype=1, tile=(256, 256))
    with pytest.raises(ImageReadError, match=r"cyx.ome.tif: slide axes CYX .* it has more planes \(C 3; C: channels"):
        Slide(tmp_path / "cyx.ome.tif")
