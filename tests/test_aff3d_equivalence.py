"""The PyTorch 3D-AFF equals the NumPy reference (float64, 1e-10): module alone and whole blocks.

Every design of the paper, k in {1, 3, 5}, several d, batch sizes, odd and even spatial sizes,
stride-1 and stride-2 blocks. BN layers get random statistics so a wrong mapping cannot hide.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference_numpy as R
from reference_numpy.designs import DESIGNS
from torch_impl.attention import AFF3D, SE, get_attention
from torch_impl.models import BasicBlock, Bottleneck, PreActBottleneck
from torch_impl.numpy_bridge import to_numpy_params

TOL = 1e-10
DESIGN_NAMES = sorted(DESIGNS)


def _max_err(a: torch.Tensor, b: np.ndarray) -> float:
    assert a.shape == b.shape, (tuple(a.shape), b.shape)
    return float(np.abs(a.detach().numpy() - b).max())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    design=st.sampled_from(DESIGN_NAMES),
    k=st.sampled_from([1, 3, 5]),
    d=st.sampled_from([1, 2, 4, 8]),
    n=st.integers(1, 3),
    c=st.sampled_from([8, 12, 16]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    parallel_gate=st.sampled_from(["sum", "product"]),
    fex_norm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_module_matches_reference(design, k, d, n, c, h, w, parallel_gate, fex_norm, seed, randomize_bn):
    torch.manual_seed(seed)
    m = AFF3D(c, design, kernel_size=k, reduction=d, parallel_gate=parallel_gate, fex_norm=fex_norm)
    m = randomize_bn(m.double().eval(), seed)
    U = torch.randn(n, c, h, w, dtype=torch.float64)
    X_l = torch.randn(n, c, h, w, dtype=torch.float64)
    ref = R.aff3d_gate(U.numpy(), X_l.numpy(), to_numpy_params(m), m.design)
    assert _max_err(m(U, X_l), ref) < TOL


BLOCKS = {
    "basic": (BasicBlock, R.basic_block),
    "bottleneck": (Bottleneck, R.bottleneck),
    "preact": (PreActBottleneck, R.preact_bottleneck),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    block=st.sampled_from(sorted(BLOCKS)),
    design=st.sampled_from([None, *DESIGN_NAMES]),
    k=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    widen=st.booleans(),
    n=st.integers(1, 2),
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    seed=st.integers(0, 2**16),
)
def test_block_matches_reference(block, design, k, stride, widen, n, h, w, seed, randomize_bn):
    cls, ref_fn = BLOCKS[block]
    planes = 8
    inplanes = planes * cls.expansion * (2 if widen else 1)  # widen or stride => projection shortcut
    torch.manual_seed(seed)
    attn = None if design is None else get_attention("aff3d", design=design, kernel_size=k, reduction=4)
    b = randomize_bn(cls(inplanes, planes, stride=stride, attn_layer=attn).double().eval(), seed)
    x = torch.randn(n, inplanes, h, w, dtype=torch.float64)
    ref = ref_fn(x.numpy(), to_numpy_params(b), stride=stride, design=None if b.attn is None else b.attn.design)
    assert _max_err(b(x), ref) < TOL


@pytest.mark.parametrize("cls,ref_fn", BLOCKS.values(), ids=list(BLOCKS))
def test_stride2_block_has_projection_and_halves_the_map(cls, ref_fn, randomize_bn):
    b = randomize_bn(cls(16, 8, stride=2, attn_layer=get_attention("aff3d", reduction=4)).double().eval())
    assert b.downsample is not None
    x = torch.randn(2, 16, 7, 6, dtype=torch.float64)
    y = b(x)
    assert y.shape == (2, 8 * cls.expansion, 4, 3)
    assert _max_err(y, ref_fn(x.numpy(), to_numpy_params(b), stride=2, design=b.attn.design)) < TOL


def test_without_spatial_branch_the_module_is_exactly_se():
    """Spatial branch off and plain (biased) F_ex convs: 3D-AFF is SE (Hu et al.), weight for weight."""
    torch.manual_seed(0)
    aff = AFF3D(32, "mc_r", reduction=4, fex_norm=False).double()
    se = SE(32, reduction=4).double()
    mapping = {"fex.conv1": "fc1", "fex.conv2": "fc2"}
    se.load_state_dict({k.replace(a, b): v for k, v in aff.state_dict().items() for a, b in mapping.items() if a in k})
    U, X_l = torch.randn(3, 32, 5, 7, dtype=torch.float64), torch.randn(3, 32, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(aff(U, X_l), se(U, X_l), rtol=0, atol=0)


def test_equations_step_by_step_shapes_and_values():
    """Eqs. 1, 4 and 7 on a hand-checkable tensor, including the broadcast of eq. 1."""
    U = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    M_c = R.eq4_channel_squeeze(U)
    assert M_c.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(M_c[0, :, 0, 0], [1.5, 5.5, 9.5])
    M_s = np.array([[[[0.0, 10.0], [20.0, 30.0]]]] * 2)  # (2, 1, 2, 2)
    M_3D = R.eq1_fuse(M_c, M_s)
    assert M_3D.shape == (2, 3, 2, 2)
    assert M_3D[1, 2, 1, 0] == M_c[1, 2, 0, 0] + M_s[1, 0, 1, 0]
    X_3D = np.full_like(U, 0.5)
    np.testing.assert_array_equal(R.eq7_output(U, X_3D, np.ones_like(U)), U * 0.5 + 1)


def test_trace_exposes_the_paper_symbols():
    m = AFF3D(8, reduction=2).double().eval()
    U, X_l = np.random.default_rng(0).standard_normal((2, 2, 8, 5, 4))
    trace: dict = {}
    R.aff3d_gate(U, X_l, to_numpy_params(m), m.design, trace=trace)
    assert {k: v.shape for k, v in trace.items()} == {
        "M_c": (2, 8, 1, 1),
        "M_s": (2, 1, 5, 4),
        "M_3D": (2, 8, 5, 4),
        "X_3D": (2, 8, 5, 4),
    }
    assert 0 < trace["X_3D"].min() and trace["X_3D"].max() < 1
