"""The method contract, run over every registered method (``oblique.list_methods()``).

A new method in ``REGISTRY`` is tested here without anyone remembering to: its declarations (kind, README
row, hyperparameters, a figure style of its own, a cost target the bench can measure), prepare, train three
steps the way ``oblique.train`` does, effective weights finite, state_dict round trip into a freshly
prepared model, optimizer state round trip, ``copy.deepcopy``, per-filter (never per-kernel-row) action,
the hard constraints (riemannian and projection methods) on the manifold, one ``oblique run --epochs 1``
per method through the CLI, and — for every method with a batched form (it declares the ``batched``
hyperparameter) — batched and per-layer forms equal in float64 to 1e-12, weights and gradients, over every
layer kind of ``LAYERS`` at once. ``tests/test_registry.py`` runs this file over a throwaway method.
"""

from __future__ import annotations

import copy
import io
import json
import os

import geoopt
import pytest
import torch
from torch import nn

import oblique
from analysis.style import method_styles
from oblique.geometry import filter_matrix
from oblique.methods import COST_MEASURES, KINDS, REGISTRY, Hyper, OptimizerConfig, get_method
from oblique.methods._grouping import GroupedReparamMethod
from oblique.methods.base import training_step
from oblique.methods.oblique_rsgd import ObliqueRSGD

METHODS = oblique.list_methods()
#: where the contract runs: the CPU here; scripts/gpu_check.sh runs it with OBLIQUE_TEST_DEVICE=cuda
DEVICE = torch.device(os.environ.get("OBLIQUE_TEST_DEVICE", "cpu"))

#: (id, layer factory, input shape): every layer kind with a tall (n > p) and a wide (n < p) filter matrix.
LAYERS = {
    "conv1d-tall": (lambda: nn.Conv1d(2, 8, 3, bias=True), (4, 2, 7)),  # (8, 6)
    "conv1d-wide": (lambda: nn.Conv1d(4, 3, 3, bias=False), (4, 4, 7)),  # (3, 12)
    "conv2d-tall": (lambda: nn.Conv2d(1, 6, 2, bias=False), (4, 1, 5, 5)),  # (6, 4)
    "conv2d-wide": (lambda: nn.Conv2d(2, 3, 3, bias=True), (4, 2, 5, 5)),  # (3, 18)
    "linear-tall": (lambda: nn.Linear(3, 7, bias=True), (4, 3)),  # (7, 3)
    "linear-wide": (lambda: nn.Linear(8, 3, bias=False), (4, 8)),  # (3, 8)
}


class _Net(nn.Module):
    """One targeted layer, then an untargeted BN-free head (so biases/other params are in play)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.head = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layer(x)).flatten(1) * self.head


def _build(key: str, name: str, seed: int, **hp):
    torch.manual_seed(seed)
    factory, shape = LAYERS[key]
    model = _Net(factory()).double().to(DEVICE)
    method = get_method(name, targets="conv+linear", **hp)
    return method, method.prepare(model), shape


def _step(method, model, opt, x, r, step: int) -> None:
    """One training step exactly as ``oblique.train`` does it."""
    training_step(method, model, opt, (model(x) * r).sum(), step)


def _data(model, shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE)
    with torch.no_grad():
        out = model(x)
    return x, torch.randn(out.shape, generator=g, dtype=torch.float64).to(DEVICE)


def test_registry_lists_all_thirteen_methods_in_order():
    """The grid: every kind of way onto both manifolds (oblique: nl, wn, fwn, pbwn, oblique-rsgd;
    Stiefel: so, srip, oni, olm, parseval, stiefel-rsgd) and the two references."""
    assert METHODS == [
        "baseline", "wd", "nl", "wn", "fwn", "oblique-rsgd", "stiefel-rsgd",
        "pbwn", "parseval", "oni", "olm", "so", "srip",
    ]  # fmt: skip


@pytest.mark.parametrize("name", METHODS)
def test_class_attributes(name):
    cls = REGISTRY[name]
    assert cls.name == name and cls.kind in KINDS and cls.summary
    for attr in ("paper", "formula", "differences"):  # its row of the README's methods table
        text = getattr(cls, attr)
        assert isinstance(text, str) and text.strip() and "\n" not in text, attr
    assert all(isinstance(h, Hyper) and h.help for h in cls.hyperparameters)
    assert cls.__module__ and (cls.__doc__ or "").strip()
    if cls.uses_strength:
        assert cls.default_strength > 0
    cfg = get_method(name).config()  # every hyperparameter recorded, resolved
    assert set(cfg["hyperparameters"]) == {h.name for h in cls.hyperparameters}


@pytest.mark.parametrize("name", METHODS)
def test_figure_style_is_its_own(name):
    """Every registered method declares a colour, a marker and a line style that no other has
    (``method_styles`` raises ``StyleError`` otherwise): no method looks like another in a figure."""
    cls = REGISTRY[name]
    styles = method_styles()
    assert styles[name]["marker"] == cls.marker and styles[name]["linestyle"] == cls.linestyle
    for key in ("color", "marker", "linestyle"):
        assert [m for m, s in styles.items() if s[key] == styles[name][key]] == [name], key


@pytest.mark.parametrize("name", [m for m in METHODS if REGISTRY[m].cost_target is not None])
def test_cost_target_can_be_measured(name):
    """A declared cost target names a way of measuring it and the bounds it needs, and applies to the
    method as the bench builds it (its defaults), through hyperparameters the method declares."""
    target = REGISTRY[name].cost_target
    assert target.measure in COST_MEASURES
    assert all(getattr(target, bound) is not None for bound in COST_MEASURES[target.measure])
    declared = {h.name: h for h in REGISTRY[name].hyperparameters}
    for hp, value in target.when:
        assert hp in declared and declared[hp].convert(value) == value, hp
    if target.measure == "batched":  # measured against its per-layer reference: batched=false
        assert "batched" in declared
    if target.measure == "fused_optimizer":  # measured against geoopt's step
        assert {"fused", "geoopt"} <= set(declared["impl"].choices)
    assert target.applies(get_method(name))


@pytest.mark.parametrize("key", list(LAYERS))
@pytest.mark.parametrize("name", METHODS)
def test_contract(name, key):
    method, model, shape = _build(key, name, seed=0)
    x, r = _data(model, shape)
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.05))
    before = {k: v.clone() for k, v in method.effective_weights(model).items()}
    assert list(before) == ["layer"]
    for step in range(1, 4):
        _step(method, model, opt, x, r, step)
    eff = method.effective_weights(model)
    assert all(torch.isfinite(w).all() for w in eff.values())
    assert not torch.equal(eff["layer"], before["layer"]), "three steps did not move the weights"
    assert eff["layer"].shape == model.layer.weight.shape
    assert torch.equal(eff["layer"], model.layer.weight.detach()), "effective weight is not what forward uses"
    assert method.analytic_flops(model) >= 0
    model.eval()
    out = model(x).detach()

    # state_dict through torch.save / weights_only load, into a freshly prepared, differently seeded model
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    method2, model2, _ = _build(key, name, seed=123)
    model2.eval()
    assert not torch.allclose(model2(x), out), "a fresh model already gives these outputs: the test is void"
    model2.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(model2(x), out, rtol=0, atol=1e-12)

    # optimizer state round trip; one more step on both gives the same weights (a resumed run)
    opt_state = io.BytesIO()
    torch.save(opt.state_dict(), opt_state)
    opt_state.seek(0)
    opt2 = method2.make_optimizer(model2, OptimizerConfig(lr=0.05))
    opt2.load_state_dict(torch.load(opt_state, weights_only=True))
    method_resumed = copy.deepcopy(method)  # method-held state (e.g. srip's power vectors) travels along
    model.train(), model2.train()
    _step(method, model, opt, x, r, 4)
    _step(method_resumed, model2, opt2, x, r, 4)
    torch.testing.assert_close(model2.layer.weight, model.layer.weight, rtol=0, atol=1e-12)

    # deepcopy: same outputs, independent parameters, and it trains
    model.eval()
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
    ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in ids for p in twin.parameters())
    twin.train()
    opt3 = method.make_optimizer(twin, OptimizerConfig(lr=0.05))
    _step(method, twin, opt3, x, r, 5)
    assert not torch.allclose(twin(x), model(x))
    assert torch.isfinite(twin.layer.weight).all()


#: every method with a batched form and its per-layer reference (the ``batched`` hyperparameter)
BATCHED = [m for m in METHODS if any(h.name == "batched" for h in REGISTRY[m].hyperparameters)]


class _Parallel(nn.Module):
    """Two layers of every kind of ``LAYERS`` (so that layers of one shape are batched together), each on
    its own input, their outputs summed."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([LAYERS[k][0]() for k in LAYERS for _ in range(2)])
        self.inputs = [LAYERS[k][1] for k in LAYERS for _ in range(2)]

    def forward(self, xs: list[torch.Tensor], rs: list[torch.Tensor]) -> torch.Tensor:
        return sum((torch.tanh(layer(x)) * r).sum() for layer, x, r in zip(self.layers, xs, rs, strict=True))


def _batched_pair(name: str, **hp):
    """The same float64 model prepared by ``name`` batched and per layer, with inputs and output weights."""
    out = []
    for batched in (True, False):
        torch.manual_seed(0)
        model = _Parallel().double().to(DEVICE)
        method = get_method(name, targets="conv+linear", batched=batched, **hp)
        out.append((method, method.prepare(model)))
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE) for shape in out[0][1].inputs]
    with torch.no_grad():
        rs = [
            torch.randn(layer(x).shape, generator=g, dtype=torch.float64).to(DEVICE)
            for layer, x in zip(out[0][1].layers, xs, strict=True)
        ]
    return out, xs, rs


def _batched_cases() -> list:
    cases = []
    for name in BATCHED:
        if issubclass(
            REGISTRY[name], GroupedReparamMethod
        ):  # several group sizes (tall layers split), learnable γ
            cases += [(name, {"group_size": g, "learn_scale": True}) for g in (0, 2, 3)]
        else:
            cases.append((name, {}))
    return cases


@pytest.mark.parametrize(("name", "hp"), _batched_cases(), ids=lambda v: v if isinstance(v, str) else str(v))
def test_batched_equals_per_layer(name, hp):
    """Every layer kind (conv1d, conv2d, linear; tall and wide) twice in one model: the batched form gives
    the per-layer form's weights and gradients to 1e-12 in float64, over three training steps."""
    assert BATCHED, "no method declares a batched form"
    ((mb, batched), (mp, per_layer)), xs, rs = _batched_pair(name, **hp)
    if isinstance(
        mb, GroupedReparamMethod
    ):  # the batched form is really in use (Note [batched across layers])
        assert all(p.shared is not None for p in mb.parametrizations(batched))
        assert all(p.shared is None for p in mp.parametrizations(per_layer))
    opts = [
        m.make_optimizer(model, OptimizerConfig(lr=0.05)) for m, model in ((mb, batched), (mp, per_layer))
    ]
    for step in range(1, 4):
        marks = [
            training_step(m, model, opt, model(xs, rs), step)
            for m, model, opt in ((mb, batched, opts[0]), (mp, per_layer, opts[1]))
        ]
        if marks[0].penalty is not None:
            torch.testing.assert_close(marks[0].penalty, marks[1].penalty, rtol=0, atol=1e-12)
        for (nb, pb), (np_, pp) in zip(batched.named_parameters(), per_layer.named_parameters(), strict=True):
            assert nb == np_
            torch.testing.assert_close(pb.grad, pp.grad, rtol=0, atol=1e-12, msg=f"step {step}: grad of {nb}")
        eff_b, eff_p = mb.effective_weights(batched), mp.effective_weights(per_layer)
        assert list(eff_b) == list(eff_p) and len(eff_b) == 12
        for k in eff_b:
            torch.testing.assert_close(eff_b[k], eff_p[k], rtol=0, atol=1e-12, msg=f"step {step}: weight {k}")
    # the two forms share one state_dict layout
    assert list(batched.state_dict()) == list(per_layer.state_dict())


def _kernel_row_spread(method) -> tuple[float, torch.Tensor]:
    """Train a Conv2d(3, 4, 3) three steps with ``method``; return the spread of its kernel-row norms."""
    torch.manual_seed(0)
    model = method.prepare(_Net(nn.Conv2d(3, 4, 3, bias=False)).double().to(DEVICE))  # filter matrix (4, 27)
    x, r = _data(model, (4, 3, 6, 6))
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.05))
    for step in range(1, 4):
        _step(method, model, opt, x, r, step)
    w = method.effective_weights(model)["layer"]  # (4, 3, 3, 3)
    return w.norm(dim=-1).std().item(), w  # one norm per kernel row of length 3: (4, 3, 3)


@pytest.mark.parametrize("name", METHODS)
def test_acts_per_filter_not_per_kernel_row(name):
    """Fails if a method constrains a conv weight per kernel row (e.g. geoopt.Sphere on the 4-D weight).

    A per-row constraint (unit norm, orthogonality, a per-row scale) makes every kernel row's norm the
    same; acting per filter leaves the rows of a trained conv filter of different lengths.
    """
    spread, w = _kernel_row_spread(get_method(name, targets="conv"))
    assert spread > 1e-3, f"{name}: every kernel row has the same norm"
    if get_method(name).promise() == "oblique":  # every filter at unit norm after every step
        torch.testing.assert_close(
            filter_matrix(w).norm(dim=1), torch.ones(4, dtype=w.dtype, device=w.device)
        )


class _PerKernelRowSphere(ObliqueRSGD):
    """The pitfall, on purpose: the 4-D conv weight itself made a geoopt.Sphere parameter."""

    def prepare(self, model):
        for t in self.target_modules(model):
            m = t.module
            m.weight = geoopt.ManifoldParameter(
                m.weight.detach() / m.weight.detach().norm(dim=-1, keepdim=True), manifold=geoopt.Sphere()
            )
        return model

    def target_weights(self, model):
        return [t.weight for t in self.target_modules(model)]

    def check_first_step(self, model):
        """The pitfall on purpose: not refused, so its spread can be measured."""


def test_kernel_row_check_catches_the_pitfall():
    spread, _ = _kernel_row_spread(_PerKernelRowSphere(targets="conv"))
    assert spread < 1e-6


@pytest.mark.slow
def test_cli_run_one_epoch_every_method(tmp_path, monkeypatch):
    """``oblique run --method M --epochs 1`` for every M; the hard constraints end on the manifold."""
    from oblique.cli import main

    monkeypatch.chdir(tmp_path)
    for name in METHODS:
        out = tmp_path / name
        rc = main(
            ["run", "--method", name, "--epochs", "1", "--out", str(out), "--no-progress", "--threads", "1"]
        )
        assert rc == 0, name
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["method"] == name
        assert 0 <= summary["test_error"] < 100
        layers = summary["drift"]["layers"]
        assert layers and all(v == v for d in layers.values() for v in d.values())  # finite, no NaN
        config = json.loads((out / "config.json").read_text())
        assert config["method_config"]["hyperparameters"] == get_method(name).config()["hyperparameters"]
        if get_method(name).promise() == "oblique":  # every filter at unit norm after every step
            assert max(d["norm_dev_max"] for d in layers.values()) <= 1e-4, name


@pytest.mark.parametrize("name", METHODS)
def test_optimizer_weight_decay_never_reaches_the_targets(name):
    """The run's --weight-decay is for untargeted parameters only, for every method alike."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    method = get_method(name)
    model = method.prepare(model)
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.1, weight_decay=0.25))
    targets = {id(t) for t in method.target_weights(model)}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert targets and targets <= set(decay)
    for p in model.parameters():
        if p.requires_grad:
            assert decay[id(p)] == (0.0 if id(p) in targets else 0.25)
