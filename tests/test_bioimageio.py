"""bioimage.io export of a model package (`python -m unetflow.export --bioimageio`): the zip of a package trained on
generated discs passes bioimageio.core's own model test without touching the network, the exported model predicts
what unetflow predicts, and the declared preprocessing normalises as unetflow does."""

import contextlib
import io
import socket
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_infer import CLASSES, PLAN, PREDICT, make_package

from conftest import applied
from unetflow.data.normalization import normalize_with
from unetflow.infer.package import build_package, load_package, save_package
from unetflow.infer.predictor import Predictor
from unetflow.net.model import UNet

bioimageio_core = pytest.importorskip("bioimageio.core")
from bioimageio.core.digest_spec import create_sample_for_model  # noqa: E402

from unetflow.export.bioimageio import declared_preprocessing  # noqa: E402 (needs bioimageio.core)
from unetflow.export.bioimageio_docs import not_carried  # noqa: E402
from unetflow.export.bioimageio_tensors import preprocessing  # noqa: E402
from unetflow.export.cli import main  # noqa: E402

SIZE = 32  # the training patch, and the test image's side on the network's grid
NORMALISED = applied("minmax", clip_percentiles=[1, 99])  # as applied: statistics of each image, float64 from numpy


def discs(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` noisy grey images (N, 1, SIZE, SIZE) of bright discs and their masks (N, SIZE, SIZE) of 0/1."""
    images, masks = np.zeros((count, 1, SIZE, SIZE), np.float32), np.zeros((count, SIZE, SIZE), np.uint8)
    for image, mask in zip(images, masks):
        for _ in range(3):
            cv2.circle(mask, tuple(int(v) for v in rng.integers(4, SIZE - 4, 2)), int(rng.integers(3, 7)), 1, -1)
        image[0] = 60 + 120 * mask + rng.normal(0, 20, mask.shape)
    return images, masks


def trained_package(folder: Path) -> Path:
    """A package of one small U-Net trained for a few seconds on generated discs (normalised as NORMALISED)."""
    torch.manual_seed(0)
    images, masks = discs(np.random.default_rng(0), 16)
    inputs = torch.from_numpy(np.stack([normalize_with(image, NORMALISED) for image in images]).astype(np.float32))
    model, targets = UNet(1, 2, depth=2, base_width=4), torch.from_numpy(masks).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimiser.step()
    torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=[SIZE, SIZE], plan=PLAN),
               folder / "fold0.pt")
    manifest = pd.DataFrame({"id": ["a"], "image_path": ["a.png"], "mask_path": ["a_mask.png"], "kind": ["image"],
                             "slices": [1], "height": [SIZE], "width": [SIZE], "channels": [1],
                             "input_channels": [1], "dtype": ["uint8"]})
    package = build_package([str(folder / "fold0.pt")], ["discs/fold0"], PLAN, manifest,
                            pd.DataFrame({"foreground_fraction": [float(masks.mean())]}), CLASSES,
                            NORMALISED, PREDICT, dict(channels=None, slice_axis=2))
    return save_package(package, folder / "discs.pt")


def write_disc_image(path: Path, seed: int) -> Path:
    images, _ = discs(np.random.default_rng(seed), 1)
    cv2.imwrite(str(path), np.clip(images[0, 0], 0, 255).astype(np.uint8))
    return path


def block_network(patch: pytest.MonkeyPatch, tried: list) -> None:
    """Every connection and name lookup fails, and is noted in `tried`."""
    def refuse(*args, **kwargs):
        tried.append(args[-1] if args else kwargs)
        raise OSError("no network in tests")

    patch.setattr(socket.socket, "connect", refuse)
    patch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The package, an image and the zip the command line exported from them with the network blocked; what the
    command printed and every connection it tried."""
    folder = tmp_path_factory.mktemp("bioimageio")
    package, image = trained_package(folder), write_disc_image(folder / "disc.png", seed=1)
    tried, printed = [], io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        block_network(patch, tried)
        main(["--model", str(package), "--bioimageio", str(folder / "discs.zip"), "--image", str(image),
              "--author", "Test Author", "--licence", "MIT"])
    return dict(package=package, image=image, zip=folder / "discs.zip", printed=printed.getvalue(), tried=tried)


def test_exported_zip_passes_the_bioimageio_model_test_offline(exported, monkeypatch):
    block_network(monkeypatch, exported["tried"])
    report = bioimageio_core.test_model(exported["zip"])
    assert report.status == "passed", report.format()
    assert {"onnx", "torchscript"} <= {entry.loc[1] for entry in report.details if len(entry.loc) > 1}
    assert exported["tried"] == []  # neither the export nor the model test reached for the network
    assert "passed bioimageio.core's model test" in exported["printed"]


@pytest.mark.parametrize("weights", ["torchscript", "onnx"])
def test_exported_model_predicts_what_unetflow_predicts(exported, weights):
    """On one tile (the image is the patch): bioimageio.core's preprocessing and the exported weights give unetflow's
    mean softmax. (Its default prediction pads the image by the halo first, mirrored, so it differs at the borders
    where unetflow's network pads the normalised image with zeros.)"""
    image = cv2.imread(str(exported["image"]), cv2.IMREAD_GRAYSCALE)
    ours = Predictor.load(exported["package"], device="cpu").image_probabilities(image[None, None])[:, 0]
    model = bioimageio_core.load_model_description(exported["zip"])
    with bioimageio_core.create_prediction_pipeline(model, weight_format=weights, devices=["cpu"]) as pipeline:
        sample = create_sample_for_model(model, inputs={"raw": image[None, None].astype(np.float32)})
        theirs = pipeline.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
    theirs = theirs.members["probabilities"].data.values[0]
    assert theirs.shape == ours.shape == (2, SIZE, SIZE)
    assert 0.05 < (ours.argmax(0) == 1).mean() < 0.95  # a trained model: both classes predicted
    np.testing.assert_allclose(theirs, ours, atol=1e-3)  # unetflow rounds the network input to float16


def test_exported_description_carries_classes_tiling_citation_and_cover(exported):
    model = bioimageio_core.load_model_description(exported["zip"])
    space = model.inputs[0].axes[2:]
    assert [(axis.id, axis.size.min, axis.size.step) for axis in space] == [("y", SIZE, 4), ("x", SIZE, 4)]
    assert [axis.halo for axis in model.outputs[0].axes[2:]] == [SIZE // 4, SIZE // 4]
    assert model.outputs[0].axes[1].channel_names == ["background", "cell"]
    assert [entry.id for entry in model.inputs[0].preprocessing if entry.id != "ensure_dtype"] == ["scale_range",
                                                                                                   "clip"]
    assert str(model.cite[0].doi) == "10.1007/978-3-319-24574-4_28"
    assert [author.name for author in model.authors] == ["Test Author"] and model.license == "MIT"
    with zipfile.ZipFile(exported["zip"]) as archive:
        assert Image.open(io.BytesIO(archive.read("cover.png"))).size == (512, 256)  # input | prediction
        readme = archive.read("README.md").decode()
        assert "What this model does not carry" in readme and "tile at the patch size" in readme


@pytest.mark.parametrize("settings", [applied("zscore"), applied("minmax"), applied("minmax", clip_percentiles=[2, 98]),
                                      applied("window", window=[20, 200]),
                                      applied("ct", ct=dict(low=10.0, high=150.0, mean=70.0, std=30.0))],
                         ids=["zscore", "minmax", "minmax-clipped", "window", "ct"])
def test_declared_preprocessing_normalises_as_unetflow(exported, settings):
    model = bioimageio_core.load_model_description(exported["zip"])
    steps = preprocessing(settings, ("y", "x"))
    model = model.model_copy(update=dict(inputs=[model.inputs[0].model_copy(update=dict(preprocessing=steps))]))
    raw = np.random.default_rng(0).gamma(2.0, 40.0, (1, 1, SIZE, 40)).astype(np.float32)
    np.testing.assert_allclose(declared_preprocessing(model, raw).numpy(), normalize_with(raw[0], settings)[None],
                               atol=1e-4)


def test_zscore_after_percentile_clipping_or_of_the_non_zero_voxels_is_said_to_be_approximate(tmp_path):
    clipped = load_package(make_package(tmp_path, preprocess=applied("zscore", clip_percentiles=[1, 99])))
    assert any(note.startswith("Normalisation:") for note in not_carried(clipped))
    (tmp_path / "nonzero").mkdir()
    nonzero = load_package(make_package(tmp_path / "nonzero", preprocess=applied("zscore_nonzero")))
    assert any(note.startswith("Normalisation: unetflow takes the mean and standard deviation of the non-zero")
               for note in not_carried(nonzero))
    assert not any(note.startswith("Normalisation:") for note in not_carried(load_package(make_package(tmp_path))))


def test_export_refuses_an_image_smaller_than_the_patch_naming_it(tmp_path):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((20, 48), np.uint8))
    with pytest.raises(SystemExit, match=r"small.png: \[20, 48\] pixels .* smaller than the training patch \[32, 32\]"):
        main(["--model", str(make_package(tmp_path)), "--bioimageio", str(tmp_path / "m.zip"), "--image", str(small)])
    assert not (tmp_path / "m.zip").exists()


def test_bioimageio_export_needs_an_image(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "m.pt"), "--bioimageio", str(tmp_path / "m.zip")])
    assert "--bioimageio needs --image" in capsys.readouterr().err
