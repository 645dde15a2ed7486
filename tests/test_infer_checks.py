"""Images given to `infer` checked before any prediction: every problem of every file at once, notes on images that
are segmented but may not be what the user meant, and image lists and shards."""

import dataclasses

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from test_infer import make_package, write_images

from unetflow.data.infer_images import listed_images, shard_of
from unetflow.infer.infer import (
    InferInputError,
    check_images,
    check_notes,
    size_ratio,
    slide_pixel_size_note,
    small_image_notes,
)
from unetflow.infer.package import load_package, training_data_summary
from unetflow.infer.predictor import Predictor


def test_every_bad_image_is_reported_at_once_before_prediction(tmp_path):
    package = load_package(make_package(tmp_path))
    good = write_images(tmp_path / "in", 1)
    text = tmp_path / "in" / "notes.png"
    text.write_text("not an image")
    rgb = tmp_path / "in" / "colour.png"
    cv2.imwrite(str(rgb), np.zeros((20, 20, 3), np.uint8) + [0, 0, 255])
    nan = tmp_path / "in" / "nan.tif"
    tifffile.imwrite(nan, np.full((20, 20), np.nan, np.float32))
    with pytest.raises(InferInputError, match="3 problem") as error:
        check_images(sorted(listed_images(str(tmp_path / "in"))), package)
    message = str(error.value)
    assert f"{text}: not a PNG file" in message and f"{rgb}: 3 channel(s)" in message
    assert "or train with data.channels: 1 to convert automatically" in message
    assert f"{nan}: 400 pixels are NaN" in message and str(good[0]) not in message
    grey = tmp_path / "grey.png"  # a grey picture saved as RGB: read as grey, as training reads it
    cv2.imwrite(str(grey), np.repeat(cv2.imread(str(good[0]), cv2.IMREAD_GRAYSCALE)[..., None], 3, axis=2))
    assert check_images([grey], package)["channels"].tolist() == [3]
    np.testing.assert_array_equal(Predictor(package, "cpu").predict_array(cv2.imread(str(grey)))[0],
                                  Predictor(package, "cpu").predict_array(cv2.imread(str(good[0]), 0))[0])
    with pytest.raises(InferInputError, match="no image files matched"):
        check_images(listed_images(str(tmp_path / "empty")), package)


def test_a_model_trained_with_data_channels_converts_other_channel_counts(tmp_path):
    package = load_package(make_package(tmp_path, channels=1, convert=True))
    rgb = tmp_path / "in" / "colour.png"
    rgb.parent.mkdir()
    cv2.imwrite(str(rgb), np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    assert check_images([rgb], package)["channels"].tolist() == [3]
    labels, _ = Predictor(package, "cpu").predict_array(cv2.imread(str(rgb))[..., ::-1])
    assert labels.shape == (20, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo shown turned: segmented as stored, and said so
    Image.open(rgb).save(rgb.with_suffix(".jpg"), exif=exif.tobytes())
    cv2.imwrite(str(tmp_path / "in" / "blank.png"), np.full((20, 20, 3), 7, np.uint8))
    assert check_notes(check_images([rgb], package)) == []
    turned, blank = check_notes(check_images([rgb.with_suffix(".jpg"), tmp_path / "in" / "blank.png"], package))
    assert turned.startswith("1 image(s) (colour.jpg: 6) carry an EXIF orientation tag")
    assert blank.startswith("1 image(s) (blank.png) hold a single value")
    cv2.imwrite(str(tmp_path / "in" / "small.png"), cv2.resize(cv2.imread(str(rgb)), (16, 12)))  # 40x48 trained
    (small,) = check_notes(check_images([tmp_path / "in" / "small.png"], package))
    assert small.startswith("1 image(s) (small.png: 12x16) are under 0.5 times the shortest side of the model's "
                            "training images")


def test_images_listed_in_a_manifest_and_stable_shards(tmp_path):
    paths = write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "list.csv").write_text("image\n" + "".join(f"{p.name}\n" for p in paths))
    assert listed_images(str(tmp_path / "in" / "list.csv")) == paths
    shards = [shard_of(p, 8) for p in paths]
    assert shards == [shard_of(p, 8) for p in paths] and all(0 <= s < 8 for s in shards)


def test_a_slide_pixel_size_given_for_images_that_are_no_slides_is_said_to_be_unused(tmp_path):
    package = load_package(make_package(tmp_path))
    table = check_images(write_images(tmp_path / "in", 2), package)
    (note,) = slide_pixel_size_note(table, 0.5)
    assert note.startswith("2 image(s) (img0_0.png, img0_1.png) are no whole-slide images (pyramids) and are "
                           "segmented at their own pixels: infer.slide_pixel_size (0.5 µm) applies to slides only")
    assert slide_pixel_size_note(table, None) == []


def test_a_volume_much_thinner_than_any_training_volume_is_named():
    table = pd.DataFrame({"image_path": ["a.nii.gz", "thin.nii.gz", "b.png"], "kind": ["volume", "volume", "image"],
                          "slices": [20, 3, 1], "height": [40] * 3, "width": [40] * 3, "size_ratio": [1.2, 3 / 17, 1]})
    assert small_image_notes(table) == [
        "1 image(s) (thin.nii.gz: 0.18 times) reach under 0.5 times as deep along their slice axis as the shallowest "
        "training volume: a 3D model sees them padded, with less context than it learned from; check them (a slab, "
        "or another slice axis?)"]


def test_the_depth_of_a_volume_is_its_slices_times_their_spacing(tmp_path):
    package = load_package(make_package(tmp_path))
    for name, slices, spacing in (("a", 17, 2.5), ("b", 40, 1.0), ("thin", 15, 0.6), ("coarse", 9, 10.0)):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, slices), np.float32), np.diag([1.0, 1.0, spacing, 1.0])),
                 tmp_path / f"{name}.nii.gz")
    manifest = pd.DataFrame({"kind": "volume", "slices": [17, 40], "height": 8, "width": 8, "dtype": "float32",
                             "image_path": [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")], "slice_axis": 2})
    depth = training_data_summary(manifest, pd.DataFrame({"foreground_fraction": [0.1, 0.1]}))["volume_depth_min"]
    assert depth == 40.0  # b: 40 slices of 1 mm, shallower than a's 17 of 2.5 mm
    trained = dataclasses.replace(package, training_data=dict(package.training_data, volume_depth_min=depth),
                                  models=[dict(m, hparams=dict(m["hparams"], dims=3)) for m in package.models])
    rows = [dict(kind="volume", image_path=str(tmp_path / f"{name}.nii.gz"), slices=slices, slice_axis=2)
            for name, slices in (("thin", 15), ("coarse", 9))]
    assert [size_ratio(None, row, trained) for row in rows] == [pytest.approx(9 / 40), pytest.approx(90 / 40)]
    assert np.isnan(size_ratio(None, rows[0], dataclasses.replace(trained, models=package.models)))  # 2D models


def test_the_command_line_on_a_folder_of_subfolders_names_them(tmp_path):
    from unetflow.infer.infer import main
    model = make_package(tmp_path)
    write_images(tmp_path / "in" / "patient01", 1)
    with pytest.raises(SystemExit, match=r"no image files matched --input '.*in' \(1 image file\(s\) in subfolders of "
                                         r".*in are not read .*: patient01 \(1\); if they are cases too, write "):
        main(["--model", str(model), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])


def test_the_command_line_sets_the_smallest_object_of_an_instance_package(tmp_path, monkeypatch):
    from unetflow.infer import infer
    from unetflow.instances.targets import instance_classes
    model = make_package(tmp_path, members=1, classes=instance_classes())
    write_images(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    used = []
    monkeypatch.setattr(infer.Predictor, "predict_sources",
                        lambda self, *args, **kwargs: used.append(self.package.predict["min_object_size"]) or (
                            pd.DataFrame(), pd.DataFrame()))
    infer.main(["--model", str(model), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                "--min-object-size", "5"])
    assert used == [5]
