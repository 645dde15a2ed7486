"""Whole-slide images through the workflow's `infer` target: a slide among the images is checked without decoding
it, segmented region by region into a label pyramid named as masks are, listed in slides.parquet, and its pyramid is
removed with the slide, as are its GeoJSON polygons."""

import json
import shutil

import numpy as np
import pandas as pd
import tifffile
from test_infer import infer_config, make_package, run_infer
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
    areas = slides["area_mm2_background"].iloc[0] + slides["area_mm2_cell"].iloc[0]
    assert abs(areas - 64 * 96 * 0.004 ** 2) < 1e-9  # every label pixel of 4 µm is one class or the other
    assert pd.read_parquet(out / "summary.parquet")["id"].unique().tolist() == ["flat"]
    geojson = out / "masks" / "site" / "s.geojson"  # polygons for QuPath beside the pyramid
    assert json.loads(geojson.read_text())["type"] == "FeatureCollection"

    shutil.move(images / "site" / "s.ome.tif", tmp_path / "moved.ome.tif")
    run_infer(workdir, config)
    assert not (out / "masks" / "site" / "s.ome.tif").exists() and not geojson.exists()
    assert pd.read_parquet(out / "slides.parquet").empty
