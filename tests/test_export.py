"""ONNX export of a model package (`python -m unetflow.export`): the graph equals PyTorch on a tile; packages whose
models take tiles of different resolutions are refused."""

import numpy as np
import pytest
import torch
from test_infer import make_package

from unetflow.infer.package import PackageError, load_package


def test_onnx_export_matches_pytorch_on_a_tile(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from unetflow.export.onnx import export_onnx, package_module

    path = make_package(tmp_path)
    onnx_path = export_onnx(path, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tiles = torch.randn(3, 1, 32, 32)
    (onnx_out,) = session.run(None, {"tiles": tiles.numpy()})
    with torch.inference_mode():
        torch_out = package_module(load_package(path))(tiles).numpy()
    assert onnx_out.shape == (3, 2, 32, 32)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5)  # the README states this tolerance


def test_onnx_export_refuses_models_trained_at_different_resolutions(tmp_path):
    from unetflow.export.onnx import export_onnx

    path = make_package(tmp_path, members=2)
    content = torch.load(path, weights_only=True)
    content["models"][1]["resolution"] = 0.5  # e.g. an ensemble member from an experiment planned for less time
    torch.save(content, path)
    with pytest.raises(PackageError, match=r"different resolutions \[0.5, 1.0\].*unetflow.infer.infer"):
        export_onnx(path, tmp_path / "model.onnx")
