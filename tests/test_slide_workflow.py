"""Whole-slide images through the workflow's `infer` target: a slide among the images is checked without decoding
it, segmented in `infer.slide_jobs` parts (one job each) merged into a label pyramid named as masks are, equal to one
job's bit for bit, with GeoJSON polygons beside it, listed in slides.parquet, and its outputs are removed with the
slide."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
from test_infer import infer_config, make_package, run_infer, scheduled
from test_slides import WINDOW, slide_pixels, write_slide

from conftest import snakemake, write_config
from unetflow.io.slides import Slide


def test_infer_segments_slides_beside_images_and_forgets_a_removed_slide(tmp_path):
    package = make_package(tmp_path, channels=3, preprocess=WINDOW)
    images = tmp_path / "new"
    (images / "site").mkdir(parents=True)
    write_slide(images / "site" / "s.ome.tif", slide_pixels())
    tifffile.imwrite(images / "flat.tif", np.full((40, 48, 3), 200, np.uint8), photometric="rgb")
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = infer_config(f"{images}/**/*.tif", models=[str(package)], shards=2)
    refused = snakemake(workdir, "infer", configfile=write_config(workdir, config, "infer.yaml"), check=False)
    assert refused.returncode != 0 and "s.ome.tif: a slide is predicted" in refused.stderr
    assert "infer.slide_pixel_size" in refused.stderr and not list(workdir.glob("results/infer/*/masks/**/*.*"))

    config["infer"].update(slide_pixel_size=4, slide_region=64)
    run_infer(workdir, config)
    out = next(workdir.glob("results/infer/*"))
    slides = pd.read_parquet(out / "slides.parquet")
    assert slides["id"].tolist() == ["site/s"] and slides["factor"].tolist() == [4]  # 1 µm level, 4 µm wanted
    with Slide(out / "masks" / "site" / "s.ome.tif") as labels:
        assert labels.base_pixel_size == 4 and labels.levels[0].shape == (64, 96)  # 1024 x 1536 at 0.25 µm
        predicted = int((labels.read_region(0, 0, 0, 64, 96) < 255).sum())  # 255: glass, not predicted
    areas = slides["area_mm2_background"].iloc[0] + slides["area_mm2_cell"].iloc[0]  # within the tissue mask
    assert 0 < predicted < 64 * 96 and areas == pytest.approx(slides["tissue_mm2"].iloc[0], rel=0.02)
    assert pd.read_parquet(out / "summary.parquet")["id"].unique().tolist() == ["flat"]
    assert not list(out.glob("slides/**/part*.npy"))  # the parts are gone once merged
    geojson = out / "masks" / "site" / "s.geojson"  # polygons for QuPath beside the pyramid
    assert json.loads(geojson.read_text())["type"] == "FeatureCollection"

    shutil.move(images / "site" / "s.ome.tif", tmp_path / "moved.ome.tif")
    run_infer(workdir, config)
    assert not (out / "masks" / "site" / "s.ome.tif").exists() and not geojson.exists()
    assert not (out / "slides" / "site" / "s").exists()
    assert pd.read_parquet(out / "slides.parquet").empty


def test_a_slide_split_over_jobs_equals_one_job_and_reruns_no_shard(tmp_path):
    package = make_package(tmp_path, channels=3, preprocess=WINDOW)
    images = tmp_path / "new"
    images.mkdir()
    write_slide(images / "s.ome.tif", slide_pixels())
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = infer_config(str(images), models=[str(package)], slide_pixel_size=2, slide_region=64)
    run_infer(workdir, config)  # slides only: no shard
    out = next(workdir.glob("results/infer/*"))
    summary = pd.read_parquet(out / "summary.parquet")  # no image: an empty table with its columns
    assert summary.empty and {"id", "class", "pixels", "confidence"} <= set(summary.columns)
    one_job = tifffile.imread(out / "masks" / "s.ome.tif")
    assert one_job.shape == (128, 192) and len(np.unique(one_job)) == 2

    config["infer"]["slide_jobs"] = 3  # 2 rows of 64-pixel regions: parts of 0, 1 and 1 rows
    assert scheduled(workdir, config) == dict(infer_slide_list=1, infer_check=1, infer_slide_part=3, infer_slide=1,
                                              infer_summary=1)
    tifffile.imwrite(images / "flat.tif", np.full((40, 48, 3), 200, np.uint8), photometric="rgb")
    run_infer(workdir, config)
    np.testing.assert_array_equal(tifffile.imread(out / "masks" / "s.ome.tif"), one_job)
    assert len(list((workdir / "results/logs/infer" / out.name / "slides/s").glob("part*.log"))) == 3
    config["infer"]["slide_region"] = 128
    assert "infer_shard" not in scheduled(workdir, config)  # a slide setting changes no shard
    config["infer"].update(slide_region=64, slide_tissue="all")
    assert "infer_shard" not in scheduled(workdir, config)
    run_infer(workdir, config)
    every_region = tifffile.imread(out / "masks" / "s.ome.tif")
    assert (one_job[:, 128:] == 255).all() and (every_region[:, 128:] < 255).all()  # the glass is predicted too
    np.testing.assert_array_equal(every_region[:, :128], one_job[:, :128])
    assert abs(pd.read_parquet(out / "slides.parquet")["tissue_mm2"].iloc[0] - 128 * 192 * 0.002 ** 2) < 1e-12

