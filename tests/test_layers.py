"""Layer kinds (oblique.layers): every method, the drift and Norm Loss on every kind's own filter axis; targets
a researcher can name; shared, parametrized and lazy weights; bake and check.

The "true output filters" are computed here independently of :mod:`oblique.layers`, by indexing each layer's
weight as torch documents it, one output channel at a time (no reshape of the whole weight).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import oblique
from oblique.layers import LAYER_KINDS, TargetsError, TargetsWarning, census, parse_targets, resolve_targets
from oblique.methods import REGISTRY, OptimizerConfig, get_method
from oblique.methods.base import training_step
from oblique.methods.norm_loss import norm_loss

transformers = pytest.importorskip("transformers")  # the dev extra installs it: CI never skips
Conv1D = transformers.pytorch_utils.Conv1D


# ------------------------------------------------------------------------------------ the layer cases
def _conv_filters(w: torch.Tensor) -> torch.Tensor:
    """Conv*: output channel i is computed from w[i] (grouped and depthwise alike)."""
    return torch.stack([w[i].flatten() for i in range(w.shape[0])])


def _transposed_filters(groups: int):
    """ConvTranspose*: weight (C_in, C_out/g, *k); output channel o = gi·C_out/g + j sums input channels
    gi·C_in/g … (gi+1)·C_in/g through w[c, j]."""

    def read(w: torch.Tensor) -> torch.Tensor:
        c_in, c_out_g = w.shape[0], w.shape[1]
        per = c_in // groups
        rows = []
        for o in range(groups * c_out_g):
            gi, j = divmod(o, c_out_g)
            rows.append(w[gi * per : (gi + 1) * per, j].flatten())
        return torch.stack(rows)

    return read


def _column_filters(w: torch.Tensor) -> torch.Tensor:
    """transformers' Conv1D: y = x @ W + b with W (in, out): output j is column j."""
    return torch.stack([w[:, j] for j in range(w.shape[1])])


def _row_filters(w: torch.Tensor) -> torch.Tensor:
    return torch.stack([w[i] for i in range(w.shape[0])])


class _Holder(nn.Module):
    def __init__(self, layer: nn.Module, run):
        super().__init__()
        self.layer, self.run = layer, run

    def forward(self, x):
        return self.run(self.layer, x)


def _mha_run(layer, x):
    return layer(x, x, x, need_weights=False)[0]


#: name -> (layer builder, input builder, forward, param, independent filters, targets)
CASES = {
    "conv1d": (
        lambda: nn.Conv1d(3, 4, 3),
        lambda: torch.randn(2, 3, 7),
        None,
        "weight",
        _conv_filters,
        "all",
    ),
    "conv2d": (
        lambda: nn.Conv2d(3, 5, 3),
        lambda: torch.randn(2, 3, 6, 6),
        None,
        "weight",
        _conv_filters,
        "all",
    ),
    "conv3d": (
        lambda: nn.Conv3d(2, 3, 2),
        lambda: torch.randn(2, 2, 4, 4, 4),
        None,
        "weight",
        _conv_filters,
        "all",
    ),
    "conv2d_grouped": (
        lambda: nn.Conv2d(4, 6, 3, groups=2),
        lambda: torch.randn(2, 4, 6, 6),
        None,
        "weight",
        _conv_filters,
        "all",
    ),
    "conv2d_depthwise": (
        lambda: nn.Conv2d(4, 4, 3, groups=4),
        lambda: torch.randn(2, 4, 6, 6),
        None,
        "weight",
        _conv_filters,
        "all",
    ),
    "conv_transpose1d": (
        lambda: nn.ConvTranspose1d(3, 4, 3),
        lambda: torch.randn(2, 3, 5),
        None,
        "weight",
        _transposed_filters(1),
        "all",
    ),
    "conv_transpose1d_g2": (
        lambda: nn.ConvTranspose1d(4, 6, 3, groups=2),
        lambda: torch.randn(2, 4, 5),
        None,
        "weight",
        _transposed_filters(2),
        "all",
    ),
    "conv_transpose3d": (
        lambda: nn.ConvTranspose3d(2, 3, 2),
        lambda: torch.randn(2, 2, 3, 3, 3),
        None,
        "weight",
        _transposed_filters(1),
        "all",
    ),
    "conv_transpose2d": (
        lambda: nn.ConvTranspose2d(4, 6, 3),
        lambda: torch.randn(2, 4, 5, 5),
        None,
        "weight",
        _transposed_filters(1),
        "all",
    ),
    "conv_transpose2d_g2": (
        lambda: nn.ConvTranspose2d(4, 6, 3, groups=2),
        lambda: torch.randn(2, 4, 5, 5),
        None,
        "weight",
        _transposed_filters(2),
        "all",
    ),
    "conv_transpose3d_g2": (
        lambda: nn.ConvTranspose3d(4, 2, 2, groups=2),
        lambda: torch.randn(2, 4, 3, 3, 3),
        None,
        "weight",
        _transposed_filters(2),
        "all",
    ),
    "linear": (lambda: nn.Linear(5, 3), lambda: torch.randn(4, 5), None, "weight", _row_filters, "all"),
    "multihead_attention": (
        lambda: nn.MultiheadAttention(8, 2, batch_first=True),
        lambda: torch.randn(2, 3, 8),
        _mha_run,
        "in_proj_weight",
        _row_filters,
        "attention",
    ),
    "hf_conv1d": (lambda: Conv1D(4, 6), lambda: torch.randn(3, 6), None, "weight", _column_filters, "all"),
    "embedding": (
        lambda: nn.Embedding(10, 4),
        lambda: torch.randint(0, 10, (2, 5)),
        None,
        "weight",
        _row_filters,
        "embedding",
    ),
}


def _exclude(case: str) -> list[str]:
    """MultiheadAttention's out_proj is a Linear (kind linear): the attention cases target in_proj alone."""
    return ["layer.out_proj"] if case == "multihead_attention" else []


HARD_OBLIQUE = [("oblique-rsgd", {}), ("pbwn", {}), ("wn", {"g": "frozen"})]


def _case(name: str, dtype=torch.float32):
    build, make_x, run, param, read, targets = CASES[name]
    torch.manual_seed(0)
    layer = build().to(dtype)
    model = _Holder(layer, run or (lambda m, x: m(x)))
    x = make_x()
    if x.is_floating_point():
        x = x.to(dtype)
    return model, x, param, read, targets


def _loss(out) -> torch.Tensor:
    return (out.float() - 0.3).square().mean()


@pytest.mark.parametrize("method_name,hp", HARD_OBLIQUE, ids=[m for m, _ in HARD_OBLIQUE])
@pytest.mark.parametrize("case", list(CASES))
def test_hard_oblique_methods_put_the_true_output_filters_on_the_sphere(case, method_name, hp):
    """Acceptance 1: after prepare and 5 optimizer steps the true output filters have unit norm within
    float32 rounding, and the drift is measured on exactly those vectors."""
    model, x, param, read, targets = _case(case)
    method = get_method(method_name, targets=targets, exclude=_exclude(case), **hp)
    model = method.prepare(model)
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.1))
    for step in range(1, 6):
        training_step(method, model, opt, _loss(model(x)), step)
    w = getattr(model.layer, param).detach()
    true = read(w)  # (n, p), independently of oblique.layers
    assert torch.allclose(true.norm(dim=1), torch.ones(true.shape[0]), atol=2e-6, rtol=0)
    (name,) = method.effective_filters(model)
    assert torch.equal(method.effective_filters(model)[name], true)
    d = oblique.model_drift(model, weights=method.effective_filters(model))["layers"][name]
    assert d["norm_dev_max"] == pytest.approx((true.double().norm(dim=1) - 1).abs().max().item(), abs=1e-12)
    assert method.check(model)[0]


@pytest.mark.parametrize("case", list(CASES))
def test_norm_loss_closed_form_equals_autograd_in_float64(case):
    """Acceptance 2: the fused (closed) form and the autograd form agree to 1e-12 in float64."""
    grads, values = [], []
    for form in ("closed", "autograd"):
        model, x, param, read, targets = _case(case, torch.float64)
        method = get_method("nl", strength=0.3, targets=targets, exclude=_exclude(case), form=form)
        model = method.prepare(model)
        w = getattr(model.layer, param)
        w.data.mul_(1.7)  # off the manifold, so the term is not small
        model.zero_grad()
        pen = method.penalty(model)
        (pen if pen is not None else torch.zeros((), dtype=torch.float64, requires_grad=True)).backward()
        method.before_step(model)
        grads.append(w.grad.clone())
        values.append(float(method.regularizer_value()))
        ref = read(w.detach())  # eq. 1 on the true output filters
        assert values[-1] == pytest.approx(((ref.norm(dim=1) - 1) ** 2).sum().item(), rel=1e-12)
    assert torch.allclose(grads[0], grads[1], atol=1e-12, rtol=0)
    assert values[0] == pytest.approx(values[1], rel=1e-12)


class _Tied(nn.Module):
    """Two linear layers holding one weight (an LM head tied to an embedding-like layer)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6, bias=False), nn.Linear(4, 6, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.a(x) + self.b(x)


@pytest.mark.parametrize("form", ["closed", "autograd"])
def test_norm_loss_counts_a_shared_weight_once(form):
    """Acceptance 2: on a shared weight, the gradient of counting it once."""
    model = _Tied().double()
    model.a.weight.data.mul_(2.0)
    method = get_method("nl", strength=0.5, targets="linear", form=form)
    model = method.prepare(model)
    assert [t.name for t in method.target_modules(model)] == ["a"]
    assert method.target_modules(model)[0].tied == ("b",)
    pen = method.penalty(model)
    if pen is not None:
        pen.backward()
    method.before_step(model)
    w = model.a.weight.detach().clone().requires_grad_(True)
    (0.5 * norm_loss([w])).backward()
    assert torch.allclose(model.a.weight.grad, w.grad, atol=1e-12, rtol=0)
    drift = oblique.model_drift(model, "linear")
    assert list(drift["layers"]) == ["a"]


# ------------------------------------------------------------------------------------ targets
def test_targets_are_plus_joined_kinds_and_keep_their_old_meaning():
    assert parse_targets("conv") == "conv" and parse_targets("linear+conv") == "conv+linear"
    assert parse_targets("all+embedding") == "all+embedding"
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    net(torch.randn(1, 1, 6, 6))  # the lazy layer initialized: a Linear now
    names = lambda t: [x.name for x in resolve_targets(net, t)]  # noqa: E731
    assert names("conv") == ["0"]
    assert names("conv+linear") == ["0", "3"]
    assert names("all") == ["0", "1", "3"]
    assert names("conv_transpose") == ["1"]
    for bad in ("", "convs", "conv+", "all+nothing"):
        with pytest.raises(oblique.options.OptionError, match="targets must be layer kinds joined by"):
            get_method("nl", targets=bad)


def test_exclude_by_glob_and_by_function():
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Conv1d(2, 2, 3), nn.Flatten(), nn.Linear(2, 3))
    assert [t.name for t in resolve_targets(net, "conv+linear", ["3"])] == ["0", "1"]
    assert [t.name for t in resolve_targets(net, "conv+linear", ["0", "3"])] == ["1"]
    assert [t.name for t in resolve_targets(net, "all", lambda n, m: isinstance(m, nn.Linear))] == ["0", "1"]
    rows = {r.name: r for r in census(net, "conv", ["1"])}
    assert rows["1"].why == "excluded" and rows["0"].targeted and "not in targets" in rows["3"].why
    method = get_method("pbwn", targets="conv+linear", exclude=["3"])
    assert method.config()["exclude"] == ["3"] and "exclude" not in get_method("pbwn").config()


def test_prepare_refuses_nothing_targeted_naming_what_would_fit():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(TargetsError, match=r"targets=conv selects no layer .*linear would fit"):
        get_method("nl").prepare(net)


def test_prepare_warns_of_a_known_kind_left_out_but_not_of_the_published_setting():
    unet = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ConvTranspose2d(2, 1, 3))
    with pytest.warns(TargetsWarning, match=r"leaves out 1 weight\(s\) of kind conv_transpose \(1\)"):
        get_method("nl").prepare(unet)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_method("nl", exclude=["1"]).prepare(unet)  # said so by name: no warning
        # targets=conv leaves a CNN's classifier out by design (Note [left out by design])
        get_method("nl").prepare(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2, 3)))


def test_lazy_layer_refused_in_one_line():
    net = nn.Sequential(nn.LazyConv2d(4, 3))
    with pytest.raises(TargetsError, match="lazy and not yet initialized: run one forward pass"):
        get_method("nl").prepare(net)


@pytest.mark.parametrize("name", ["nl", "pbwn", "wn", "oni", "oblique-rsgd"])
def test_an_already_parametrized_weight_is_refused_naming_it(name):
    net = nn.Sequential(nn.Conv2d(1, 4, 3))
    torch.nn.utils.parametrizations.spectral_norm(net[0])
    with pytest.raises(TargetsError, match=r"0 already carries a parametrization \(_SpectralNorm\)"):
        get_method(name).prepare(net)
    hooked = nn.Sequential(nn.Conv2d(1, 4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecated hook, on purpose
        torch.nn.utils.weight_norm(hooked[0])
    with pytest.raises(TargetsError, match="computed by a hook"):
        get_method(name).prepare(hooked)


def test_a_registered_layer_kind_is_targeted_with_its_own_layout():
    class Cols(nn.Module):
        """y = x @ K with K (in, out): neurons are columns."""

        def __init__(self):
            super().__init__()
            self.kernel = nn.Parameter(torch.randn(5, 3))

        def forward(self, x):
            return x @ self.kernel

    oblique.register_layer_kind("cols_test", Cols, params=("kernel",), layout=oblique.layers.Columns())
    try:
        net = nn.Sequential(Cols())
        assert [t.name for t in resolve_targets(net, "all")] == ["0.kernel"]
        method = get_method("pbwn", targets="cols_test")
        method.prepare(net)
        assert torch.allclose(net[0].kernel.norm(dim=0), torch.ones(3))
        assert method.check(net)[0]
    finally:
        LAYER_KINDS.pop("cols_test")


# ------------------------------------------------------------------------------------ transformers
def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=40, n_positions=16)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _llama(tied: bool = False):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        hidden_size=16,
        intermediate_size=32,
        vocab_size=40,
        max_position_embeddings=16,
        tie_word_embeddings=tied,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def test_targets_all_on_gpt2_and_llama_is_every_attention_and_mlp_matrix():
    """Acceptance 3."""
    gpt = {r.name: r for r in census(_gpt2(), "all")}
    mats = [
        f"transformer.h.{i}.{m}"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert all(gpt[n].targeted and gpt[n].layout == "columns" for n in mats)
    assert not gpt["transformer.wte"].targeted  # embedding: opt-in
    llama = {r.name: r for r in census(_llama(), "all")}
    mats = [
        f"model.layers.{i}.{m}"
        for i in range(2)
        for m in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    ]
    assert all(llama[n].targeted and llama[n].layout == "rows" for n in mats)
    for model in (_gpt2(), _llama()):
        with pytest.raises(
            TargetsError,
            match=r"targets=conv selects no layer of this .*: layers of kind linear, "
            r"embedding would fit",
        ):
            get_method("nl").prepare(model)


def _ids():
    return torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_method_keeps_a_tied_lm_head_or_refuses(name):
    """Acceptance 4."""
    model = _gpt2().train()
    method = get_method(name, targets="all")
    try:
        model = method.prepare(model)
    except TargetsError as e:
        assert method.replaces_weights and "lm_head is tied to transformer.wte" in str(e)
        assert model.lm_head.weight is model.transformer.wte.weight and not parametrize.is_parametrized(
            model.lm_head
        )
        return
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.01))
    ids = _ids()
    for step in (1, 2):
        training_step(method, model, opt, model(ids, labels=ids).loss, step)
    assert model.lm_head.weight is model.transformer.wte.weight


#: every method and the hyperparameters it is checked at (on the manifold where it has one)
AT = {name: {} for name in REGISTRY} | {"wn": {"g": "frozen"}, "oni": {"scale": 1.0, "iters": 15}}


def _train(model, method, steps=3):
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.01))
    ids = _ids()
    model.train()
    for step in range(1, steps + 1):
        training_step(method, model, opt, model(ids, labels=ids).loss, step)
    return model.eval()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_bake_gives_the_plain_architecture_with_the_same_outputs(name):
    """Acceptance 5: outputs equal before and after bake; a strict load into the plain architecture."""
    model = _llama()
    method = get_method(name, targets="all", **AT[name])
    model = _train(method.prepare(model), method)
    ids = _ids()
    with torch.no_grad():
        before = model(ids).logits
        oblique.bake(model)
        after = model(ids).logits
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-5)
    plain = _llama()
    plain.load_state_dict(model.state_dict(), strict=True)
    assert all(type(p) is nn.Parameter for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, after, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["oni", "wn", "oblique-rsgd"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_save_pretrained_round_trip_after_bake(arch, name, tmp_path):
    """Acceptance 5: save_pretrained / from_pretrained after bake (GPT-2's tied head excluded: the
    reparametrizing methods refuse a tie)."""
    model = _gpt2() if arch == "gpt2" else _llama()
    method = get_method(name, targets="all", exclude=["lm_head"], **AT[name])
    model = oblique.bake(_train(method.prepare(model), method))
    ids = _ids()
    with torch.no_grad():
        want = model(ids).logits
    model.save_pretrained(tmp_path)
    cls = type(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cls.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(ids).logits, want)
    if arch == "gpt2":
        assert again.lm_head.weight is again.transformer.wte.weight


# ------------------------------------------------------------------------------------ check
@pytest.mark.parametrize("name", ["oblique-rsgd", "pbwn", "wn", "oni", "olm"])
def test_check_holds_on_the_manifold_and_fails_when_pushed_off(name):
    """Acceptance 6."""
    model = _llama()
    method = get_method(name, targets="all", **AT[name])
    model = method.prepare(model)
    assert method.check(model)[0], method.check(model)[1]
    model = _train(model, method)
    ok, reason = method.check(model)
    assert ok, reason
    with torch.no_grad():  # push every filter off by hand: scale what the method trains
        for t in method.target_modules(model):
            if parametrize.is_parametrized(t.module, t.param):
                plist = t.module.parametrizations[t.param]
                target = (
                    plist[0].scale
                    if hasattr(plist[0], "scale")
                    else (plist.original0 if hasattr(plist, "original0") else plist.original)
                )
            else:
                target = t.weight
            target.mul_(1.5)
    ok, reason = method.check(model)
    assert not ok and ("off the oblique manifold" in reason or "not orthonormal" in reason), reason


def test_check_of_oni_at_its_default_iterations_says_how_far_off():
    model = _llama()
    method = get_method("oni", targets="all", scale=1.0)  # T = 5
    ok, reason = method.check(method.prepare(model))
    assert not ok and "not orthonormal" in reason


def test_check_of_a_soft_method_reports_the_drift():
    model = _llama()
    method = get_method("nl", targets="all")
    ok, reason = method.check(method.prepare(model))
    assert ok and "promises no exact constraint; drift norm_dev_mean=" in reason


def test_bake_keeps_a_plain_model_and_copies_nothing():
    net = nn.Sequential(nn.Conv1d(1, 2, 3))
    w = net[0].weight
    assert oblique.bake(copy.deepcopy(net)) is not None and oblique.bake(net)[0].weight is w


# ------------------------------------------------------------------------------------ grouped convolutions
@pytest.mark.parametrize("name", ["oni", "olm"])
def test_oni_olm_orthogonalize_within_conv_groups_and_keep_depthwise_kernels_uncentred(name):
    """Grouped: each convolution group orthonormal on its own (the cross-group Gram is left free); the whole-
    layer form is the documented ``conv_groups=false``. Depthwise: a constant image still passes."""
    torch.manual_seed(0)
    grouped = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2, bias=False))
    method = get_method(name, scale=1.0, iters=15) if name == "oni" else get_method(name, scale=1.0)
    method.prepare(grouped)
    assert method.parametrizations(grouped)[0].sizes == [3, 3] and method.check(grouped)[0]
    f = grouped[0].weight.detach().reshape(6, -1)
    cross = (f[:3] @ f[3:].T).abs().max().item()
    assert cross > 1e-2  # filters of different groups are not orthogonalized against each other
    whole = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2, bias=False))
    get_method(name, conv_groups=False).prepare(whole)
    assert get_method(name).parametrizations(whole)[0].sizes == [6]

    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False))
    method = get_method(name)
    method.prepare(depthwise)
    with torch.no_grad():
        out = depthwise(torch.ones(1, 4, 5, 5))
    assert out.abs().min().item() > 1e-3, "an uncentred depthwise kernel passes a constant image"
    centred = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False))
    get_method(name, center_depthwise=True).prepare(centred)
    with torch.no_grad():
        assert centred(torch.ones(1, 4, 5, 5)).abs().max().item() < 1e-5  # the documented choice


def test_oni_orthogonalizes_q_k_v_of_a_packed_in_proj_weight_each_on_its_own():
    mha = _Holder(nn.MultiheadAttention(8, 2, batch_first=True), _mha_run)
    method = get_method("olm", targets="attention", exclude=["layer.out_proj"], scale=1.0)
    method.prepare(mha)
    # q, k, v each (8, 8): centred rows span 7 dimensions, so two groups of 4 each (Note [tall groups])
    assert method.parametrizations(mha)[0].sizes == [4] * 6 and method.check(mha)[0]


# ------------------------------------------------------------------------------------ the command line
def test_oblique_targets_prints_the_census(capsys):
    from oblique.cli import main

    assert main(["targets", "transformer1d", "--targets", "all", "--exclude", "fc"]) == 0
    out = capsys.readouterr().out
    assert "blocks.0.attn.in_proj_weight" in out and "attention" in out
    assert "excluded" in out and out.rstrip().endswith("weight-bearing parameters targeted")
    assert main(["targets", "resnet1d", "--targets", "linears"]) == 2
    assert "--targets must be layer kinds joined by +" in capsys.readouterr().err


def test_exclude_is_a_run_setting_recorded_only_when_given(tmp_path):
    from oblique.config import RunConfig, run_config_from

    cfg = run_config_from({"exclude": ["fc"], "targets": "conv+linear"}, source="run.toml")
    assert cfg.exclude == ["fc"] and cfg.build_method().exclude == ("fc",)
    assert "exclude" not in RunConfig().identity() and "exclude" not in RunConfig().recorded()
    assert RunConfig(exclude=["fc"]).identity()["exclude"] == ["fc"]
    with pytest.raises(oblique.options.OptionError, match="exclude must be a list of text; got 'fc'"):
        run_config_from({"exclude": "fc"}, source="run.toml")


def test_an_exclude_that_matches_nothing_is_warned_of():
    net = nn.Sequential(nn.Conv1d(1, 2, 3))
    with pytest.warns(TargetsWarning, match="exclude 'fc' matches no layer"):
        get_method("nl", exclude=["fc"]).prepare(net)


@pytest.mark.slow
def test_a_run_records_its_targets_and_trains_the_transformer(tmp_path):
    """Acceptance 7 (the run; the README gives its time): transformer1d with every kind targeted."""
    import json

    from oblique.cli import main

    out = tmp_path / "t"
    argv = ["run", "--model", "transformer1d", "--targets", "all", "--exclude", "fc", "--epochs", "1"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["exclude"] == ["fc"] and "fc" not in config["targeted"]
    assert (
        "blocks.0.attn.in_proj_weight" in config["targeted"]
        and "blocks.0.attn.out_proj" in config["targeted"]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["drift"]["layers"]) == set(config["targeted"])


@pytest.mark.slow
def test_a_study_compares_methods_on_the_transformer(tmp_path):
    """Acceptance 7: a study over transformer1d with every kind targeted runs (two methods, one epoch)."""
    import csv

    from oblique.cli import main

    out = tmp_path / "s"
    argv = ["study", "--model", "transformer1d", "--targets", "all", "--methods", "nl,oni", "--seeds", "1"]
    assert main([*argv, "--epochs", "1", "--no-bench", "--no-progress", "--out", str(out)]) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["nl", "oni"]
    assert all(r["status"] == "ok" and r["targets"] == "all" for r in rows)
