"""Deployment: aff3d_resnet50 exports to ONNX (onnxruntime agrees to 1e-4) and runs under torch.compile.

Measured on the 2-core development CPU with a cold compile cache: inductor needs about 110 s to
compile all of aff3d_resnet50 and about 45 s for aff3d_resnet18, most of it C++ compilation; so
the whole aff3d_resnet50 is checked to compile into *one graph* (dynamo, no graph break), and
inductor's generated code is checked on one 3D-AFF bottleneck, the part that is new here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torch_impl import create_model
from torch_impl.attention import get_attention
from torch_impl.models import Bottleneck



def test_aff3d_resnet50_onnx_matches_onnxruntime(tmp_path, trained_like):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = trained_like(create_model("aff3d_resnet50"), size=64, batch=4)
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "aff3d_resnet50.onnx"
    torch.onnx.export(
        model, (x,), str(path), dynamo=True, verbose=False, input_names=["images"], output_names=["logits"]
    )
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == (1, 1000)
    # float32 through 50 layers: each runtime lands 4e-5 to 8e-5 from the float64 logits (|z| < 2.4),
    # so the two may differ by a little more than 1e-4 absolute on a logit of 0.2 (measured).
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_aff3d_resnet50_compiles_into_one_graph(randomize_bn):
    """fullgraph=True: dynamo must capture the whole network, attention included, without a graph break."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = randomize_bn(create_model("aff3d_resnet50")).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
def test_inductor_compiles_an_aff3d_bottleneck(randomize_bn):
    """Inductor's generated C++ for a 3D-AFF bottleneck block (inference)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = randomize_bn(Bottleneck(64, 16, 1, get_attention("aff3d"))).eval()
    compiled = torch.compile(block, fullgraph=True)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), block(x), rtol=1e-5, atol=1e-5)
