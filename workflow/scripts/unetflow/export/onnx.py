"""ONNX export of a model package: one graph that maps a batch of preprocessed tiles of the patch size to the
mean softmax of the package's models (of region models, the mean sigmoid of each region), for runtimes without
PyTorch (onnxruntime, TensorRT, OpenVINO, ...).

The caller preprocesses images as the package says (`Package.preprocess`, `input_channels`, then resized by the models'
resolution, `Package.resolutions`) and tiles them (with overlap and blending, e.g. MONAI's sliding_window_inference);
mirroring is not part of the graph.

    python -m unetflow.export --model results/unet/package/unet.pt --onnx unet.onnx
"""

from pathlib import Path

import torch
from torch import nn

from unetflow.infer.package import Package, PackageError, load_package
from unetflow.infer.predictor import model_from_weights

INPUT_NAME, OUTPUT_NAME = "tiles", "probabilities"


class MeanProbabilities(nn.Module):
    """The mean softmax (with `sigmoid`, the mean sigmoid of each output) of several models, as one module."""

    def __init__(self, models: list[nn.Module], sigmoid: bool = False):
        super().__init__()
        self.models, self.sigmoid = nn.ModuleList(models), sigmoid

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        outputs = [model(tiles) for model in self.models]
        return torch.stack([out.sigmoid() if self.sigmoid else out.softmax(dim=1) for out in outputs]).mean(dim=0)


def package_module(package: Package) -> MeanProbabilities:
    """The package's models as one inference module on the CPU (BatchNorm folded, eval mode, standard layout)."""
    models = [model_from_weights(m["hparams"], m["weights"], torch.device("cpu")) for m in package.models]
    return MeanProbabilities([model.to(memory_format=torch.contiguous_format) for model in models],
                             package.regions is not None).eval()


def tile_patch(package: Package) -> list[int]:
    """The one patch of all the package's models; PackageError naming the file when they differ (2D and 3D)."""
    patches = {tuple(patch) for patch in package.patches}
    if len(patches) != 1:
        raise PackageError(f"{package.path}: its models predict with different patches {sorted(patches)} (2D and "
                           f"3D models), but an ONNX graph takes tiles of one size; use unetflow.infer.infer")
    return list(patches.pop())


def tile_resolution(package: Package) -> float:
    """The one resolution all the package's models were trained at (images are resized by it after preprocessing);
    PackageError naming the file when they differ."""
    resolutions = set(package.resolutions)
    if len(resolutions) != 1:
        raise PackageError(f"{package.path}: its models were trained at different resolutions {sorted(resolutions)}, "
                           f"but an ONNX graph takes tiles of one; use unetflow.infer.infer")
    return resolutions.pop()


def export_onnx(package_path, onnx_path) -> Path:
    """Write the package's mean softmax (or region sigmoid) as an ONNX graph with input `tiles` (N, C, *patch)
    float32 (N free) and output `probabilities` (N, K, *patch), K the classes or regions."""
    package = load_package(package_path)
    tile_resolution(package)
    module = package_module(package)
    example = torch.zeros(2, package.input_channels, *tile_patch(package))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},))
    Path(onnx_path).parent.mkdir(parents=True, exist_ok=True)
    program.save(str(onnx_path))
    return Path(onnx_path)


def onnx_summary(package: Package, path: Path) -> str:
    """What an ONNX export wrote, for people: its input and output and how the input is to be prepared."""
    shape, regions = f"{package.input_channels}, {', '.join(map(str, tile_patch(package)))}", package.regions
    output = f"{package.num_classes}, ...) mean softmax" if regions is None else \
        f"{len(regions.names)}, ...) mean sigmoid of the regions {', '.join(regions.names)}"
    return (f"wrote {path}: input '{INPUT_NAME}' (N, {shape}) float32, preprocessed as {package.preprocess}, resized "
            f"by {tile_resolution(package):g} and rounded to float16; output '{OUTPUT_NAME}' (N, {output}")
