"""The network of a whole-image export (bioimage.io): the package's models as one module that maps a batch of
preprocessed images of any size to their mean softmax (of region models, the mean sigmoid of each region), averaged
over the package's mirroring as `predict` averages it, written as TorchScript and as ONNX with free batch and spatial
sizes (multiples of the network's divisibility)."""

import math
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from unetflow.export.onnx import INPUT_NAME, OUTPUT_NAME, package_module, tile_patch, tile_resolution
from unetflow.infer.package import Package
from unetflow.net.tiling import flip_combinations

MAX_SIZE = 65536  # the largest size an ONNX spatial axis may take


class Mirrored(nn.Module):
    """The mean of a module's output over flips of its input (each output flipped back), `flips` as tensor dims of
    a (N, C, *spatial) batch, the first flip () (none)."""

    def __init__(self, module: nn.Module, flips: list[tuple[int, ...]]):
        super().__init__()
        self.module, self.flips = module, flips

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = self.module(images)
        for dims in self.flips[1:]:
            total = total + self.module(images.flip(dims)).flip(dims)
        return total / len(self.flips)


def export_module(package: Package) -> Mirrored:
    """The package's models as one inference module on the CPU, mirrored along every spatial axis when the package
    predicts mirrored (predict.mirror); PackageError naming the file when its models take different patches or
    resolutions."""
    tile_resolution(package)
    dims = len(tile_patch(package))
    flips = flip_combinations(range(dims), dims) if package.predict["mirror"] else [()]
    return Mirrored(package_module(package), flips).eval()


def size_multiple(module: Mirrored) -> list[int]:
    """Per spatial axis, the size every input should be a multiple of (the least common multiple of the models'
    pooling strides): other sizes are padded inside the network."""
    return [math.lcm(*axis) for axis in zip(*(model.size_multiple() for model in module.module.models))]


def write_torchscript(module: nn.Module, example: torch.Tensor, path) -> Path:
    """The module traced on `example` (sizes stay free: the tracer records shape arithmetic) saved to `path`."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace")  # deprecated, but what Fiji runs
        traced = torch.jit.trace(module, example)
    traced.save(str(path))
    return Path(path)


def write_onnx(module: nn.Module, example: torch.Tensor, multiples: list[int], path) -> int:
    """The module as an ONNX graph (input `tiles`, output `probabilities`) with a free batch size and spatial sizes
    free in steps of `multiples`, saved to `path`; its opset version."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    sizes = {2 + axis: torch.export.Dim(f"size{axis}", min=1, max=MAX_SIZE // step) * step
             for axis, step in enumerate(multiples)}
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=({0: batch, **sizes},), verbose=False)
    program.save(str(path))
    return next(entry.version for entry in onnx.load(str(path)).opset_import if entry.domain in ("", "ai.onnx"))
