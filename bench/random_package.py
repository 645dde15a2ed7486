"""The model package the inference benchmarks share: one random-weight 2D U-Net (seed 0) of two classes, its plan
holding only what prediction reads (device, sizes, resolution). Not a benchmark itself."""

import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from unetflow.infer.package import build_package, save_package  # noqa: E402
from unetflow.net.model import UNet  # noqa: E402
from unetflow.plan.plan import plan_device  # noqa: E402

PREDICT = dict(overlap=0.5, batch_size=4, mirror=False, precision="fp32", largest_component=False,
               min_object_size=16, object_probability=0.5)
PREPROCESS = dict(normalization="zscore", clip_percentiles=None, ct=None, window=None, spacing=None, scale=1.0)


def two_classes(foreground: str) -> pd.DataFrame:
    """The class table of background (0) and `foreground` (255)."""
    return pd.DataFrame({"index": [0, 1], "name": ["background", foreground], "value": [0, 255], "color": None,
                         "ignore": False})


def random_package(folder: Path, channels: int, depth: int, base_width: int, patch: int, size: int,
                   classes: pd.DataFrame, preprocess: dict = PREPROCESS, predict: dict = PREDICT) -> Path:
    """folder/bench.pt: a package of one random U-Net of `channels` inputs (`depth`, `base_width`, square `patch`)
    as if trained on `size` x `size` images of `classes` (its checkpoint: folder/fold0.pt)."""
    torch.manual_seed(0)
    model = UNet(channels, 2, depth, base_width)
    plan = dict(device=plan_device(torch.device("cpu")), in_channels=channels, num_classes=2,
                settings=dict(resolution=dict(value=1.0)))
    checkpoint = folder / "fold0.pt"
    torch.save(dict(model=model.state_dict(), hparams=model.hparams, patch_size=[patch] * 2, plan=plan), checkpoint)
    manifest = pd.DataFrame({"id": ["a"], "image_path": ["a.png"], "mask_path": ["a.png"], "kind": ["image"],
                             "slices": [1], "height": [size], "width": [size], "channels": [channels],
                             "input_channels": [channels], "dtype": ["uint8"]})
    package = build_package([str(checkpoint)], ["bench/fold0"], plan, manifest,
                            pd.DataFrame({"foreground_fraction": [0.3]}), classes, preprocess, predict,
                            dict(channels=None, slice_axis=0))
    return save_package(package, folder / "bench.pt")
