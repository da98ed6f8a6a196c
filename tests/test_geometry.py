"""oblique.geometry: filter matrices, projection, and the drift metrics against their definitions
(docs/DESIGN.md, "Drift metrics")."""

import math

import pytest
import torch
from torch import nn

from oblique.geometry import (
    DRIFT_KEYS,
    drift,
    filter_matrix,
    model_drift,
    project_oblique,
    project_oblique_,
    targeted_modules,
)

# (name, weight shape): conv1d/conv2d/linear, tall (n > p) and wide (n < p), plus 1×p and n×1.
SHAPES = [
    ("conv1d-wide", (6, 4, 3)),
    ("conv1d-tall", (20, 2, 3)),
    ("conv2d-wide", (8, 3, 3, 3)),
    ("conv2d-tall", (40, 2, 2, 2)),
    ("linear-wide", (5, 12)),
    ("linear-tall", (12, 5)),
    ("linear-square", (7, 7)),
    ("row", (1, 9)),
    ("column", (9, 1)),
]


def _reference_drift(w: torch.Tensor) -> dict:
    """The definitions of docs/DESIGN.md, "Drift metrics", written the slow, literal way (float64)."""
    f = w.reshape(w.shape[0], -1).double()
    n = f.shape[0]
    gram = f @ f.T  # (n, n)
    r = torch.tensor([math.sqrt(sum(x * x for x in row.tolist())) for row in f], dtype=torch.float64)
    diag = torch.diag(torch.diagonal(gram))
    off = gram - diag
    return {
        "norm_dev_mean": (r - 1).abs().mean().item(),
        "norm_dev_max": (r - 1).abs().max().item(),
        "ddiag_dev": (
            torch.linalg.matrix_norm(diag - torch.eye(n, dtype=torch.float64)) / math.sqrt(n)
        ).item(),
        "offdiag_dev": 0.0 if n == 1 else (torch.linalg.matrix_norm(off) / math.sqrt(n * (n - 1))).item(),
    }


@pytest.mark.parametrize("name,shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_drift_matches_design_formulas(name, shape, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.7
    got, want = drift(w), _reference_drift(w)
    assert tuple(got) == DRIFT_KEYS
    for k in DRIFT_KEYS:
        assert isinstance(got[k], float)
        assert got[k] == pytest.approx(want[k], rel=1e-10, abs=1e-12), k


def test_ddiag_dev_equals_rms_of_squared_norm_deviation():
    w = torch.randn(10, 4, 3, dtype=torch.float64)
    r2 = filter_matrix(w).square().sum(1)
    assert drift(w)["ddiag_dev"] == pytest.approx(((r2 - 1) ** 2).mean().sqrt().item(), rel=1e-12)


def test_drift_is_zero_on_orthonormal_rows():
    q, _ = torch.linalg.qr(torch.randn(12, 5, dtype=torch.float64))  # (12, 5) orthonormal columns
    d = drift(q.T.contiguous())  # 5 orthonormal rows of length 12
    for k in DRIFT_KEYS:
        assert d[k] < 1e-12


@pytest.mark.parametrize("name,shape", SHAPES)
def test_filter_matrix_is_per_filter(name, shape):
    w = torch.randn(*shape)
    f = filter_matrix(w)
    assert f.shape == (shape[0], math.prod(shape[1:]))
    assert torch.equal(f[0], w[0].flatten())


def test_filter_matrix_rejects_vectors():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        filter_matrix(torch.zeros(3))


@pytest.mark.parametrize("name,shape", SHAPES)
def test_projection_lands_on_manifold_and_is_idempotent(name, shape):
    w = torch.randn(*shape, dtype=torch.float64) * 3
    p = project_oblique(w)
    assert drift(p)["norm_dev_max"] < 1e-12
    assert torch.allclose(project_oblique(p), p, atol=1e-15)
    # each filter keeps its direction
    cos = torch.nn.functional.cosine_similarity(filter_matrix(p), filter_matrix(w), dim=1)
    assert torch.allclose(cos, torch.ones_like(cos))


def test_projection_of_zero_filter_is_finite():
    """No NaN: the zero row stays zero and reads as distance 1 (Note [zero filter])."""
    w = torch.randn(4, 3, 3)
    w[2] = 0
    p = project_oblique(w)
    assert torch.isfinite(p).all() and torch.equal(p[2], torch.zeros(3, 3))
    w2 = w.clone()
    project_oblique_([w2])
    assert torch.equal(w2, p)
    assert drift(p)["norm_dev_max"] == pytest.approx(1.0)


def test_in_place_projection_keeps_storage():
    conv = nn.Conv2d(3, 8, 3)
    ptr = conv.weight.data_ptr()
    project_oblique_([conv.weight.data])
    assert conv.weight.data_ptr() == ptr
    assert drift(conv.weight)["norm_dev_max"] < 1e-6


def _net():
    return nn.Sequential(
        nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(8, 3)
    )


def test_targeted_modules():
    net = _net()
    assert [t.name for t in targeted_modules(net, "conv")] == ["0", "2"]
    assert [t.name for t in targeted_modules(net, "conv+linear")] == ["0", "2", "4"]
    assert [t.name for t in targeted_modules(net, "linear+conv")] == ["0", "2", "4"]
    with pytest.raises(ValueError, match="layer kinds joined by \\+"):
        targeted_modules(net, "convs")


def test_model_drift_layers_and_mean():
    net = _net()
    d = model_drift(net, targets="conv+linear")
    assert list(d["layers"]) == ["0", "2", "4"]
    for k in DRIFT_KEYS:
        assert d["mean"][k] == pytest.approx(sum(v[k] for v in d["layers"].values()) / 3)
    assert d["layers"]["4"] == drift(net[4].weight)


def _offdiag_direct(f: torch.Tensor) -> float:
    """``offdiag_dev`` the slow way: every off-diagonal dot product as an exactly rounded sum (math.fsum)."""
    rows = f.double().tolist()
    n = len(rows)
    squares = [
        math.fsum(a * b for a, b in zip(rows[i], rows[j], strict=True)) ** 2
        for i in range(n)
        for j in range(n)
        if i != j
    ]
    return math.sqrt(math.fsum(squares) / (n * (n - 1)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_offdiag_dev_is_accurate_near_zero(seed, dtype):
    """Rows orthonormal up to rounding (float32) or up to a 1e-11 perturbation (float64): ``‖G‖² − Σ r⁴``
    returned 0 or 3e-9 here, the entries of FFᵀ give the true value (Note [exact offdiag])."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(64, 16, dtype=torch.float64, generator=g))  # orthonormal columns
    f = q.T.contiguous()  # (16, 64): wide, orthonormal rows
    if dtype == torch.float64:
        f = f + 1e-11 * torch.randn(16, 64, dtype=torch.float64, generator=g)
    w = f.to(dtype).reshape(16, 4, 4, 4)  # as a conv weight
    want = _offdiag_direct(filter_matrix(w))
    assert 1e-13 < want < 1e-7  # near zero, and not zero
    assert drift(w)["offdiag_dev"] == pytest.approx(want, rel=1e-6)


def test_offdiag_dev_of_a_tall_matrix_uses_the_smaller_gram():
    """Tall rows cannot be orthogonal: the identity on FᵀF does not cancel (Note [exact offdiag])."""
    q, _ = torch.linalg.qr(
        torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    f = torch.cat([q, q[:3] + 1e-3 * q[3:6]])  # (15, 12): 12 orthonormal rows and 3 near-copies
    assert drift(f)["offdiag_dev"] == pytest.approx(_offdiag_direct(f), rel=1e-10)
