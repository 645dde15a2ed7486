"""Training from sparse QuPath GeoJSON annotations: the rasteriser (classes, holes, MultiPolygons, ignored regions),
its refusals, the GeoJSON infer writes read back, whole-slide images cut into their annotated regions at ingest, the
sampler never drawing wholly ignored patches, and a slide trained and evaluated through snakemake on its annotated
pixels only."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from test_polygons import SCALE, label_map
from test_slide_formats import write_svs
from test_slides import write_slide

from conftest import snakemake, tiny_config, write_config
from unetflow.config import declared_class_problems
from unetflow.data.annotated import merged_boxes, pieces
from unetflow.data.ingest import DataSpec, check_data_set
from unetflow.data.pairing import DataValidationError
from unetflow.data.split import split_cases
from unetflow.infer.package import load_package
from unetflow.infer.slide import wanted_pixel_size
from unetflow.infer.slide_objects import class_styles
from unetflow.io.annotations import annotation_problems, rasterise, read_annotations
from unetflow.io.formats import ImageReadError
from unetflow.io.images import read_image, read_mask, write_mask
from unetflow.io.labels import IGNORE_INDEX
from unetflow.io.polygons import class_features
from unetflow.io.polygons import write_geojson as write_polygons
from unetflow.io.slide_labels import write_label_pyramid
from unetflow.train.sampler import PatchSampler

CLASSES = {"Stroma": 0, "Tumor": 1}
TUMOUR = [[64, 64], [192, 64], [192, 192], [64, 192], [64, 64]]  # base pixels, x, y
HOLE = [[112, 112], [144, 112], [144, 144], [112, 144], [112, 112]]
STROMA = [[256, 256], [448, 256], [448, 448], [256, 448], [256, 256]]
IGNORED = [[200, 200], [240, 200], [240, 240], [200, 240], [200, 200]]


def feature(name: str | None, geometry_type: str, coordinates) -> dict:
    """A QuPath-style annotation feature."""
    properties = {"objectType": "annotation"}
    if name is not None:
        properties["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": {"type": geometry_type, "coordinates": coordinates},
            "properties": properties}


def write_geojson(path: Path, features: list[dict], collection: bool = True) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features} if collection else features))
    return path


def annotated_features() -> list[dict]:
    """A tumour square with a hole, a stroma square."""
    return [feature("Tumor", "Polygon", [TUMOUR, HOLE]), feature("Stroma", "Polygon", [STROMA])]


def slide_with_tumour(seed: int) -> np.ndarray:
    """A 512x512 RGB base level: pink tissue, dark purple tumour under TUMOUR and, unannotated, at x, y 300..400,
    40..140."""
    rng = np.random.default_rng(seed)
    pixels = (rng.uniform(0.85, 1, (512, 512, 1)) * [230, 150, 200]).astype(np.uint8)
    pixels[64:192, 64:192] = pixels[40:140, 300:400] = [90, 30, 120]
    pixels[112:144, 112:144] = [230, 150, 200]
    return pixels


def test_rasterise_paints_classes_leaves_holes_and_unannotated_pixels_ignored(tmp_path):
    second = [[[300, 20], [340, 20], [340, 60], [300, 60], [300, 20]]]
    features = [feature("Tumor", "MultiPolygon", [[TUMOUR, HOLE], second]), feature("Stroma", "Polygon", [STROMA]),
                feature("Ignore*", "Polygon", [[[260, 260], [300, 260], [300, 300], [260, 300], [260, 260]]])]
    annotations = read_annotations(write_geojson(tmp_path / "a.geojson", features, collection=False))
    labels = rasterise(annotations, CLASSES, 255, (0, 0, 512, 512))
    assert labels[100, 100] == 1 and labels[128, 128] == 255  # inside the tumour, inside its hole
    assert labels[40, 320] == 1 and labels[0, 0] == 255  # the MultiPolygon's second part; nothing annotated
    assert labels[350, 350] == 0 and labels[280, 280] == 255  # stroma; the ignored square painted over it
    assert (labels == 1).sum() == 128 * 128 - 32 * 32 + 40 * 40  # pixel centres inside: exact areas
    coarse = rasterise(annotations, CLASSES, 255, (16, 16, 48, 48), scale=4)  # a box of a 4x coarser grid
    assert coarse.shape == (32, 32) and coarse[0, 0] == 1 and coarse[12, 12] == 255 and (coarse == 1).sum() == 960


def test_the_geojson_infer_writes_rasterises_back_to_its_labels(tmp_path):
    labels = label_map()  # blobs of classes 1 and 2, a polygon inside a hole
    features = class_features(labels, {1: ("Tumor", None), 2: ("Stroma", None)}, scale=SCALE)
    annotations = read_annotations(write_polygons(tmp_path / "labels.geojson", features))
    box = (0, 0, *labels.shape)
    np.testing.assert_array_equal(rasterise(annotations, {"Tumor": 1, "Stroma": 2}, 0, box, SCALE), labels)


def test_a_class_of_annotations_at_index_0_is_written_as_polygons_and_a_background_is_not():
    table = pd.DataFrame({"index": [0, 1], "name": ["Stroma", "Tumor"], "value": [0, 1], "color": None,
                          "ignore": False})
    assert class_styles(table) == {0: ("Stroma", None), 1: ("Tumor", None)}
    assert class_styles(table.assign(name=["background", "Tumor"])) == {1: ("Tumor", None)}


def test_annotation_refusals_name_the_file_the_feature_and_the_unknown_names(tmp_path, caplog):
    over_the_edge = [[[500, 500], [530, 500], [530, 530], [500, 500]]]
    outside = [[[600, 600], [630, 600], [630, 630], [600, 600]]]
    features = [feature("Tumour", "Polygon", [TUMOUR]), feature("Necrosis", "Polygon", [STROMA]),
                feature(None, "Polygon", [STROMA]), feature("Tumor", "Point", [1, 2]),
                feature("Tumor", "Polygon", over_the_edge), feature("Tumor", "Polygon", outside)]
    path = write_geojson(tmp_path / "b.geojson", features)
    with caplog.at_level(logging.INFO):
        problems = annotation_problems(read_annotations(path), path, CLASSES, (512, 512))
    assert len(problems) == 3 and all(str(path) in problem for problem in problems)
    assert "['Necrosis', 'Tumour'] are not in data.classes" in problems[1] and "feature(s) [2]" in problems[0]
    assert "feature 5 (Tumor) (x 600..630, y 600..630) lies wholly outside its image of 512x512" in problems[2]
    assert "b.geojson: 1 point or line feature(s) left out" in caplog.text  # a counting point: no area
    assert "detection" not in caplog.text
    detection = dict(feature("Tumor", "Polygon", [TUMOUR]), properties={"objectType": "detection",
                                                                      "classification": {"name": "Tumor"}})
    with caplog.at_level(logging.INFO):
        read_annotations(write_geojson(tmp_path / "cells.geojson", [detection]))
    assert "cells.geojson: 1 detection(s) (QuPath's cell or tile objects) drawn as labels" in caplog.text
    assert "feature 4 (Tumor) (x 500..530, y 500..530) reaches over the edge of its image" in caplog.text
    ignored = read_annotations(write_geojson(tmp_path / "d.geojson", [feature("Ignore*", "Polygon", [TUMOUR])]))
    assert "holds no classified annotation" in annotation_problems(ignored, path, CLASSES, (512, 512))[0]
    two_bad = [feature("Tumor", "Circle", [1, 2]), feature("Tumor", "Polygon", [[[0, 0], [1, 1]]])]
    for text, message in [("{not json", "not valid GeoJSON"), ('{"type": "Topology"}', "not a GeoJSON"),
                          (json.dumps(two_bad), "feature 0: a Circle geometry.*; .*feature 1: a ring")]:
        (tmp_path / "c.geojson").write_text(text)
        with pytest.raises(ImageReadError, match=message):
            read_annotations(tmp_path / "c.geojson")


def test_boxes_merge_when_their_margins_overlap_and_large_ones_are_cut():
    assert merged_boxes([(0, 0, 10, 10), (20, 20, 30, 30), (500, 500, 510, 510)], 8, (600, 600)) == [
        (0, 0, 38, 38), (492, 492, 518, 518)]
    assert pieces((0, 0, 100, 250), side=100) == [(0, 0, 100, 83), (0, 83, 100, 167), (0, 167, 100, 250)]


def data_set(folder: Path, count: int, geojson=annotated_features) -> tuple[Path, Path]:
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True), masks.mkdir(parents=True)
    for index in range(count):
        write_slide(images / f"slide{index}.ome.tif", slide_with_tumour(index))
        write_geojson(masks / f"slide{index}.geojson", geojson())
    return images, masks


def test_ingest_cuts_a_slide_into_its_annotated_regions_at_the_pixel_size(tmp_path):
    images, masks = data_set(tmp_path, 1)
    tifffile.imwrite(images / "plain.tif", slide_with_tumour(5)[:256, :256], photometric="rgb")
    write_geojson(masks / "plain.geojson", [feature("Tumor", "Polygon", [TUMOUR]),
                                            feature("Stroma", "Polygon", [[[200, 0], [256, 0], [256, 40], [200, 0]]])])
    spec = DataSpec(images=str(images), masks=str(masks), classes=CLASSES, slide_pixel_size=2.0)
    manifest, classes = check_data_set(spec, 2, tmp_path / "annotated")
    assert classes.loc[classes["ignore"], "value"].tolist() == [255]
    slide = manifest.set_index("id").loc["slide0_r0"]
    assert slide["group"] == "slide0" and slide["pixel_size_um"] == 2.0 and slide["slide_level"] == 2  # 1 µm, x2
    assert (slide["height"], slide["width"]) == (64, 64)  # the boxes with their margins, clipped to the grid
    mask = read_mask(slide["mask_path"])
    assert (mask == 1).sum() == 16 * 16 - 4 * 4 and (mask == 0).sum() == 24 * 24 and mask[0, 0] == 255
    tumour = read_image(slide["image_path"])[10, 10].astype(int)  # block-averaged (and JPEG-compressed)
    assert np.abs(tumour - [90, 30, 120]).max() < 20
    plain = manifest.set_index("id").loc["plain"]
    assert plain["image_path"] == str(images / "plain.tif") and read_mask(plain["mask_path"]).shape == (256, 256)


def test_a_scanner_slide_is_cut_into_its_annotated_regions_too(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    write_svs(tmp_path / "images" / "scan.svs", slide_with_tumour(3))  # Aperio: 0.25 µm, levels /2 and /4
    write_geojson(tmp_path / "masks" / "scan.geojson", annotated_features())
    spec = DataSpec(images=str(tmp_path / "images"), masks=str(tmp_path / "masks"), classes=CLASSES,
                    slide_pixel_size=1.0)
    manifest = check_data_set(spec, 1, tmp_path / "annotated")[0]
    assert manifest["id"].str.startswith("scan_r").all() and set(manifest["group"]) == {"scan"}
    assert set(manifest["slide_level"]) == {2} and (read_mask(manifest["mask_path"].iloc[0]) == 1).any()


def test_a_slide_with_a_label_image_is_cut_into_its_labelled_regions(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    write_slide(tmp_path / "images" / "slide.ome.tif", slide_with_tumour(4))  # 512 x 512 at 0.25 µm
    labels = np.full((128, 128), 255, np.uint8)  # a label image of the whole slide at 1 µm, 255 unlabelled
    labels[16:48, 16:48], labels[100:120, 100:120] = 1, 0  # the tumour square; a stroma patch far from it
    write_mask(tmp_path / "masks" / "slide.png", labels)
    spec = DataSpec(images=str(tmp_path / "images"), masks=str(tmp_path / "masks"), classes=CLASSES, ignore_label=255,
                    slide_pixel_size=0.5)
    manifest = check_data_set(spec, 1, tmp_path / "annotated")[0].set_index("id")
    assert list(manifest.index) == ["slide_r0"] and manifest.loc["slide_r0", "slide_level"] == 1  # boxes merged
    mask = read_mask(manifest.loc["slide_r0", "mask_path"])  # at 0.5 µm: twice the label image's resolution
    assert mask.shape == (256, 256) and (mask == 1).sum() == 64 * 64 and (mask == 0).sum() == 40 * 40
    assert (mask == 1)[32:96, 32:96].all()
    assert read_image(manifest.loc["slide_r0", "image_path"]).shape[:2] == (256, 256)

    (tmp_path / "masks" / "slide.png").unlink()  # the same labels as a pyramid at the slide's resolution
    write_label_pyramid(tmp_path / "masks" / "slide.ome.tif", np.kron(labels, np.ones((4, 4), np.uint8)), 0.25)
    again = check_data_set(spec, 1, tmp_path / "annotated")[0].set_index("id")
    np.testing.assert_array_equal(read_mask(again.loc["slide_r0", "mask_path"]), mask)

    (tmp_path / "masks" / "slide.ome.tif").unlink()
    write_mask(tmp_path / "masks" / "slide.png", labels[:, :64])  # half the slide: not its aspect
    with pytest.raises(DataValidationError, match=r"slide.png: a label image of 64 x 128 pixels, but its slide"):
        check_data_set(spec, 1, tmp_path / "annotated")


def test_images_with_only_their_objects_annotated_train_the_rest_as_the_unannotated_class(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for index in range(2):  # plain images, only the tumour annotated (QuPath's object annotations)
        tifffile.imwrite(images / f"c{index}.tif", slide_with_tumour(index)[:256, :256], photometric="rgb")
        write_geojson(masks / f"c{index}.geojson", [feature("Tumor", "Polygon", [TUMOUR, HOLE]),
                                                    feature("Ignore*", "Polygon", [IGNORED])])
    spec = DataSpec(images=str(images), masks=str(masks), classes={"background": 0, "Tumor": 1})
    with pytest.raises(DataValidationError, match="class 'background' .* occurs in no mask"):
        check_data_set(spec, 1, tmp_path / "annotated")
    manifest, classes = check_data_set(DataSpec(**{**spec.__dict__, "unannotated": "background"}), 1,
                                       tmp_path / "annotated")
    labels = read_mask(manifest.loc[0, "mask_path"])
    assert labels[100, 100] == 1 and labels[128, 128] == labels[0, 0] == 0  # the tumour, its hole, the rest
    assert (labels == 255).sum() == 40 * 40 and labels[220, 220] == 255  # the ignored square stays ignored
    assert classes.loc[~classes["ignore"], "name"].tolist() == ["background", "Tumor"]
    assert declared_class_problems({"classes": {"background": 0, "Tumor": 1}, "unannotated": "Background"}) == [
        "data.unannotated: 'Background' is neither ignore nor a class of data.classes (background, Tumor)"]


def test_distant_annotations_become_sources_of_one_split_group(tmp_path):
    far = [[[400, 400], [500, 400], [500, 500], [400, 500], [400, 400]]]
    images, masks = data_set(tmp_path, 2, lambda: [feature("Tumor", "Polygon", [TUMOUR]),
                                                   feature("Stroma", "Polygon", far)])
    spec = DataSpec(images=str(images), masks=str(masks), classes=CLASSES, slide_pixel_size=0.25)
    manifest = check_data_set(spec, 1, tmp_path / "annotated")[0]
    assert manifest["id"].tolist() == ["slide0_r0", "slide0_r1", "slide1_r0", "slide1_r1"]
    assert manifest["slide_box"].map(list).tolist()[:2] == [[0, 0, 256, 256], [336, 336, 512, 512]]  # + margins
    splits = split_cases(manifest, 0.5, 0.5, 0.0).merge(manifest[["id", "group"]])
    assert splits.groupby("group")["split"].nunique().tolist() == [1, 1]


def test_ingest_reports_every_annotation_problem_together(tmp_path):
    images, masks = data_set(tmp_path, 2)
    write_geojson(masks / "slide1.geojson", [feature("Necrosis", "Polygon", [TUMOUR])])
    with pytest.raises(DataValidationError) as refused:
        check_data_set(DataSpec(images=str(images), masks=str(masks), classes=CLASSES), 1, tmp_path / "out")
    message = str(refused.value)
    assert "slide0.ome.tif: a slide is trained at the pixel size of data.slide_pixel_size" in message
    assert "slide1.geojson: class name(s) ['Necrosis']" in message and "3 problem(s)" in message
    with pytest.raises(DataValidationError, match="set data.classes to map each QuPath class name"):
        check_data_set(DataSpec(images=str(images), masks=str(masks)), 1, tmp_path / "out")


def test_sampler_draws_no_wholly_ignored_patch_and_skips_wholly_ignored_cases():
    labels = np.full((256, 256), IGNORE_INDEX, np.uint8)
    labels[200:210, 10:20] = 0  # a small annotated corner
    image = np.zeros((1, 256, 256), np.float16)
    unlabelled = (image, np.full((64, 64), IGNORE_INDEX, np.uint8))
    sampler = PatchSampler([(image, labels), unlabelled], [32, 32], torch.device("cpu"), foreground_share=0.0)
    generator = torch.Generator().manual_seed(0)
    patches = torch.cat([sampler.sample(8, generator)[1] for _ in range(4)])
    assert all(bool((patch != IGNORE_INDEX).any()) for patch in patches)
    assert sampler.labelled == [0]


def test_a_slide_trains_on_its_annotations_and_is_evaluated_on_them_only(tmp_path):
    images, masks = data_set(tmp_path, 4)
    config = tiny_config()
    config["data"] = dict(images=str(images), masks=str(masks), classes=CLASSES, slide_pixel_size=2.0)
    config["predict"] = dict(split="all")
    per_case_file, package = Path("results/unet/evaluate/per_case.parquet"), Path("results/unet/package/unet.pt")
    snakemake(tmp_path, str(per_case_file), str(package), configfile=write_config(tmp_path, config))
    trained = load_package(tmp_path / package)
    assert wanted_pixel_size(trained, None) == 2.0  # infer needs no infer.slide_pixel_size
    # a slide is normalised as its regions were, whatever part of it a region shows: a fixed window, no z-score
    assert (trained.preprocess["normalization"], trained.preprocess["window"]) == ("window", [0, 255])
    manifest = pd.read_parquet(tmp_path / "results" / "data" / "manifest.parquet")
    assert sorted(manifest["id"]) == [f"slide{i}_r0" for i in range(4)] and manifest["group"].nunique() == 4
    per_case = pd.read_parquet(tmp_path / per_case_file)
    assert len(per_case[per_case["class"] == 1]) == 4
    for row in per_case[per_case["class"] == 1].to_dict("records"):
        mask = read_mask(tmp_path / manifest.set_index("id").loc[row["id"], "mask_path"])
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == (mask != 255).sum() == 16 * 16 - 4 * 4 + 24 * 24
