"""Instance objects of whole-slide images: found region by region, each object whole with one id (also where a region
border cuts it), as predicting the whole level at once finds them; their table, summary and GeoJSON detections."""

import json
import logging

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from scipy import ndimage
from skimage.draw import disk
from test_infer import make_package
from test_slides import WINDOW, write_slide

from unetflow.evaluate.object_metrics import object_metrics
from unetflow.infer.predictor import Predictor
from unetflow.infer.slide import SlidePredictor, predict_slides
from unetflow.infer.slide_objects import SLIDE_OBJECT_COLUMNS, SlideObjects, owned_objects
from unetflow.instances.objects import instances_from_probabilities
from unetflow.instances.targets import instance_classes
from unetflow.io.slide_labels import write_label_pyramid
from unetflow.io.slides import Slide

TISSUE = (220, 120, 190)
NUCLEUS = (70, 30, 120)


def nuclei_image(shape, seed: int, radius=(3, 5), count: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image (H, W, 3) uint8 of `count` dark nuclei (disks of `radius` pixels, apart) on noisy pink tissue
    and their id map."""
    rng = np.random.default_rng(seed)
    image, ids = np.empty((*shape, 3), np.uint8), np.zeros(shape, np.uint16)
    image[:] = TISSUE
    while ids.max() < count:
        rows, cols = disk(rng.uniform(0, shape), rng.uniform(*radius), shape=shape)
        if not ids[max(0, rows.min() - 2):rows.max() + 3, max(0, cols.min() - 2):cols.max() + 3].any():
            image[rows, cols], ids[rows, cols] = NUCLEUS, ids.max() + 1
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8), ids


def find_nuclei(model: torch.nn.Module) -> None:
    """Set a small three-class U-Net prepared for inference (batch norm folded into the convolutions) to find dark
    pixels: only the full-resolution path carries the darkness (minus the mean of the channels windowed onto [-1, 1],
    cut at 0) from pixel to pixel, the head makes it the interior class (background elsewhere)."""
    with torch.no_grad():
        for value in model.parameters():
            value.zero_()
        model.encoders[0][0].weight[0, :, 1, 1] = -1 / 3
        for conv in (model.encoders[0][3], model.decoders[0][0], model.decoders[0][3]):
            conv.weight[0, 0, 1, 1] = 1
        model.head.weight[:2, 0, 0, 0] = torch.tensor([-40.0, 40.0])
        model.head.bias[:] = torch.tensor([4.0, -4.0, 0.0])


@pytest.fixture(scope="module")
def instance_predictor(tmp_path_factory) -> Predictor:
    folder = tmp_path_factory.mktemp("instance_pkg")
    path = make_package(folder, channels=3, members=1, preprocess=WINDOW, classes=instance_classes("three_class"))
    predictor = Predictor.load(path, "cpu")
    predictor.package.predict.update(mirror=False, batch_size=32, min_object_size=8)
    find_nuclei(predictor.models[0])
    return predictor


@pytest.fixture(scope="module")
def nuclei_slide(tmp_path_factory):
    """A slide of nuclei (3 to 5 pixels in radius at 1 µm, its level 2) on tissue, glass in its right quarter."""
    image, _ = nuclei_image((512, 768), seed=2, radius=(12, 20))
    image[:, 576:] = 240
    return write_slide(tmp_path_factory.mktemp("nuclei") / "n.ome.tif", image)


def test_objects_cut_by_region_borders_come_out_whole_as_from_the_whole_level(nuclei_slide, instance_predictor,
                                                                              tmp_path):
    row = predict_slides(instance_predictor, [nuclei_slide], tmp_path, pixel_size=1.0, region=32,
                         object_size=16).iloc[0]
    with Slide(row["mask_path"]) as labels:
        written = labels.read_region(0, 0, 0, 128, 192)[0]
        assert written.dtype == np.uint32
    with Slide(nuclei_slide) as slide:
        level = np.moveaxis(slide.read_region(2, 0, 0, 128, 192), 0, -1)
    _, probs = instance_predictor.predict_array(level)
    whole = instances_from_probabilities(probs, "three_class", 8)
    assert sum(crossing_core_borders(whole)) > 10  # many objects are cut by the borders of the 32-pixel cores
    assert whole.max() > 30 and len(np.unique(written)) - 1 == whole.max()
    assert object_metrics(whole, written)["aji"] == pytest.approx(1, abs=1e-3)
    table = pd.read_parquet(row["objects_path"])
    assert list(table.columns) == list(SLIDE_OBJECT_COLUMNS) and table["id"].tolist() == list(range(1, len(table) + 1))
    assert row["objects"] == len(table) and row["objects_per_mm2"] == pytest.approx(len(table) / row["tissue_mm2"])
    first = table.iloc[0]
    rows, cols = np.nonzero(written == first["id"])
    assert first["area_pixels"] == len(rows) and first["area_um2"] == pytest.approx(len(rows))  # 1 µm pixels
    centroid = ((cols.mean() + 0.5) * 4, (rows.mean() + 0.5) * 4)  # base-level pixels: level 2 is 4x coarser
    assert (first["centroid_x"], first["centroid_y"]) == pytest.approx(centroid)
    features = json.loads(open(row["geojson_path"]).read())["features"]
    assert len(features) == len(table) and {f["properties"]["objectType"] for f in features} == {"detection"}


def crossing_core_borders(ids: np.ndarray, core: int = 32) -> list[bool]:
    """Per object of an id map, whether its bounding box crosses a border of the `core`-pixel grid."""
    return [box is not None and (box[0].start // core != (box[0].stop - 1) // core
                                 or box[1].start // core != (box[1].stop - 1) // core)
            for box in ndimage.find_objects(ids)]


def test_an_object_cut_by_a_core_border_belongs_to_the_one_core_holding_its_top_left(caplog):
    ids = np.zeros((40, 40), np.int32)
    ids[8:14, 18:25] = 1  # crosses the border at column 20 between two cores
    ids[30:34, 2:6] = 2
    left, right = ((0, 0, 40, 20), (0, 0, 40, 40)), ((0, 20, 40, 40), (0, 0, 40, 40))
    assert owned_objects(ids, *left, reach=8)[0].max() == 2  # both objects start in the left core
    assert not owned_objects(ids, *right, reach=8)[0].any()
    labels = np.zeros((40, 40), np.uint32)
    objects = SlideObjects(labels, "three_class", 1, reach=8)
    probs = np.stack([ids == 0, ids > 0, np.zeros_like(ids, bool)]).astype(np.float32)
    assert objects.add(*left, probs) == 2 and objects.add(*right, probs) == 0
    np.testing.assert_array_equal(labels, ids)  # whole, one id each
    with caplog.at_level(logging.WARNING):
        SlideObjects(np.zeros((40, 40), np.uint32), "three_class", 1, reach=2).add(*left, probs)
    assert "reaches 5 pixels past its region" in caplog.text and "infer.slide_object_size" in caplog.text


def test_the_label_pyramid_holds_object_ids_beyond_16_bits(tmp_path):
    ids = np.zeros((300, 280), np.uint32)
    ids[10:40, 20:50], ids[200:260, 100:130] = 70_000, 4_000_000_000
    write_label_pyramid(tmp_path / "o.ome.tif", ids, 0.5)
    with Slide(tmp_path / "o.ome.tif") as slide:
        for index, step in enumerate((1, 2)):
            np.testing.assert_array_equal(slide.read_region(index, 0, 0, 300, 280)[0], ids[::step, ::step])


def test_the_read_box_of_an_instance_package_reaches_past_the_tiles_by_the_largest_object(instance_predictor):
    slides = SlidePredictor(instance_predictor, region=50, object_size=20)
    assert (slides.core, slides.reach, slides.margin) == (64, 32, 64)  # tile step 16, tile margin 32


def test_four_instance_parts_merge_into_the_objects_and_ids_of_one_part(nuclei_slide, instance_predictor, tmp_path):
    slides = SlidePredictor(instance_predictor, region=32, object_size=16)  # 128 rows: 4 rows of regions
    one = slides.predict(nuclei_slide, tmp_path / "one.ome.tif", 1.0)
    parts = [slides.predict_part(nuclei_slide, tmp_path / f"p{part}.npy", 1.0, part, 4) for part in range(4)]
    bands = [min(128, 32 * (part + 1) + slides.margin) - 32 * part for part in range(4)]  # + the rows objects reach
    assert [len(np.load(path)) for path in parts] == bands and bands[0] > 32
    four = slides.merge(nuclei_slide, parts, tmp_path / "four.ome.tif", 1.0)
    whole = tifffile.imread(tmp_path / "one.ome.tif")
    assert sum(crossing_core_borders(whole)) > 10 and whole.max() > 30
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "four.ome.tif"), whole)  # ids too
    pd.testing.assert_frame_equal(pd.read_parquet(four["objects_path"]), pd.read_parquet(one["objects_path"]))
    assert json.loads(open(four["geojson_path"]).read()) == json.loads(open(one["geojson_path"]).read())
