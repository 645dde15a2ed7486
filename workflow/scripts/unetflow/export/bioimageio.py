"""bioimage.io export of a model package: a BioImage Model Zoo model (description format 0.5) for Fiji/deepImageJ,
ilastik, bioimageio.core and the Zoo, built with bioimageio.spec and tested with bioimageio.core's model test before
it is kept.

The zip holds the package's ensemble (mirrored as it predicts) as TorchScript and ONNX weights taking whole images
or tiles of any size from the training patch up in steps of the network's divisibility (a halo of a quarter of the
patch), its normalisation as bioimage.io preprocessing, the class (or region) names of the output channels, a test
input cut from a real image with the exported model's output for it, a cover (that input beside its prediction), a
README saying what the model does not carry (`unetflow.export.bioimageio_docs.not_carried`) and the U-Net paper's
citation.

    python -m unetflow.export --model results/unet/package/unet.pt --image some_image.tif --bioimageio unet.zip
"""

import getpass
import shutil
import tempfile
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import torch
from bioimageio.core import test_model
from bioimageio.core.digest_spec import create_sample_for_model
from bioimageio.core.proc_setup import get_pre_and_postprocessing
from bioimageio.spec import save_bioimageio_package
from bioimageio.spec.model import v0_5

from unetflow.data.normalization import normalize_with
from unetflow.export.bioimageio_docs import cover_image, documentation, not_carried, output_names
from unetflow.export.bioimageio_tensors import (
    INPUT_ID,
    OUTPUT_ID,
    SPACE_AXES,
    input_axes,
    network_patch,
    output_axes,
    preprocessing,
    raw_network_grid,
    test_input,
)
from unetflow.export.network import export_module, size_multiple, write_onnx, write_torchscript
from unetflow.infer.infer import check_images
from unetflow.infer.package import Package, load_package
from unetflow.io.sources import read_source_image, slice_axis, source_spacing

TORCHSCRIPT, ONNX, COVER = "unet.torchscript.pt", "unet.onnx", "cover.png"
SUFFIX = {"test": "npy", "sample": "tif"}  # test tensors for the runtimes, sample tensors for people
DEFAULT_LICENCE = "CC-BY-4.0"  # the Zoo's recommendation for model weights
UNET_PAPER = v0_5.CiteEntry(text="Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for "
                                 "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, 234-241",
                            doi="10.1007/978-3-319-24574-4_28")


def default_author() -> str:
    """The author when none is given: the user running the export."""
    return getpass.getuser()


def real_test_input(package: Package, image, patch) -> np.ndarray:
    """The test input (1, C, *patch) float32 cut from the centre of `image` (a file unetflow reads) on the network's
    grid, not normalised; ValueError naming the file when it cannot be read or is too small."""
    row = check_images([Path(image)], package).iloc[0]
    grid = raw_network_grid(read_source_image(row), package, source_spacing(row), slice_axis(row))
    return test_input(grid, patch, str(image))


def export_bioimageio(model, output, image, authors=(), licence: str | None = None,
                      name: str | None = None) -> tuple[Path, list[str]]:
    """Write the package `model` as a bioimage.io model zip `output`, its test input cut from `image`, checked by
    bioimageio.core's model test (ValueError with its report, and nothing written, when it fails); the zip and what it
    does not carry."""
    package = load_package(model)
    module = export_module(package)
    multiples = size_multiple(module)
    patch = network_patch(package, multiples)
    raw = real_test_input(package, image, patch)
    fields = dict(name=name or f"unetflow {Path(model).stem}", authors=list(authors) or [default_author()],
                  licence=licence or DEFAULT_LICENCE, patch=patch, multiples=multiples)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        example = torch.from_numpy(normalize_with(raw[0], package.preprocess)[None].astype(np.float32))
        write_torchscript(module, example, folder / TORCHSCRIPT)
        opset = write_onnx(module, example, multiples, folder / ONNX)
        untested = description(package, folder, opset, **fields)
        with torch.no_grad():  # the test output: by the exported model itself, after its declared preprocessing
            probabilities = torch.jit.load(str(folder / TORCHSCRIPT))(declared_preprocessing(untested, raw)).numpy()
        write_test_files(folder, raw, probabilities, package)
        notes = not_carried(package)
        steps = preprocessing(package.preprocess, SPACE_AXES[len(patch)])
        (folder / "README.md").write_text(documentation(package, steps, notes, multiples))
        tested = checked(save_bioimageio_package(description(package, folder, opset, tested=True, **fields),
                                                 output_path=folder / "model.zip"))
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(tested, output)), notes


def declared_preprocessing(model: v0_5.ModelDescr, raw: np.ndarray) -> torch.Tensor:
    """The network input of the test input `raw` as bioimageio.core preprocesses it by `model`'s description."""
    sample = create_sample_for_model(model, inputs={INPUT_ID: raw})
    get_pre_and_postprocessing(model, dataset_for_initial_statistics=[]).pre(sample)
    return torch.from_numpy(np.ascontiguousarray(sample.members[INPUT_ID].data.values, dtype=np.float32))


def write_test_files(folder: Path, raw: np.ndarray, probabilities: np.ndarray, package: Package) -> None:
    """The test tensors (.npy), sample tensors (.tif, for people) and the cover into `folder`."""
    for tensor, array in ((INPUT_ID, raw), (OUTPUT_ID, probabilities)):
        np.save(folder / f"test_{tensor}.npy", array)
        imageio.imwrite(folder / f"sample_{tensor}.tif", array[0])
    cover_image(raw, probabilities, package, folder / COVER)


def description(package: Package, folder: Path, opset: int, name: str, authors: list[str], licence: str, patch,
                multiples, tested: bool = False) -> v0_5.ModelDescr:
    """The model's description of the files in `folder`; with `tested`, with its documentation, cover, test and
    sample tensors."""
    def files(kind: str, tensor: str) -> v0_5.FileDescr | None:
        return v0_5.FileDescr(source=folder / f"{kind}_{tensor}.{SUFFIX[kind]}") if tested else None

    return v0_5.ModelDescr(
        name=name, description=summary(package), authors=[v0_5.Author(name=author) for author in authors],
        cite=[UNET_PAPER], license=licence, tags=["unet", "segmentation", f"{len(patch)}d", "pytorch", "onnx"],
        documentation=v0_5.FileDescr(source=folder / "README.md") if tested else None,
        covers=[v0_5.FileDescr(source=folder / COVER)] if tested else [],
        inputs=[v0_5.InputTensorDescr(
            id=v0_5.TensorId(INPUT_ID), axes=input_axes(package.input_channels, patch, multiples),
            test_tensor=files("test", INPUT_ID), sample_tensor=files("sample", INPUT_ID),
            preprocessing=preprocessing(package.preprocess, SPACE_AXES[len(patch)]),
            data=v0_5.IntervalOrRatioDataDescr(type="float32"))],
        outputs=[v0_5.OutputTensorDescr(
            id=v0_5.TensorId(OUTPUT_ID), axes=output_axes(output_names(package), patch),
            test_tensor=files("test", OUTPUT_ID), sample_tensor=files("sample", OUTPUT_ID),
            data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))],
        weights=v0_5.WeightsDescr(
            torchscript=v0_5.TorchscriptWeightsDescr(source=folder / TORCHSCRIPT,
                                                     pytorch_version=torch.__version__.split("+")[0]),
            onnx=v0_5.OnnxWeightsDescr(source=folder / ONNX, opset_version=opset, parent="torchscript")))


def summary(package: Package) -> str:
    """The one-line description of the model."""
    return (f"{len(package.patches[0])}D U-Net ensemble of {len(package.models)} trained with unetflow, segmenting "
            f"{', '.join(output_names(package))}")


def checked(path: Path) -> Path:
    """The zip at `path` when bioimageio.core's model test passes on it, else ValueError with the test's report."""
    report = test_model(path)
    if report.status != "passed":
        raise ValueError(f"bioimageio.core's model test failed on the exported model, which is not written:\n"
                         f"{report.format()}")
    return path
