"""The optimizer as a setting and a study axis: AdamW, and Muon on the filter matrices
(:mod:`oblique.methods.muon`) — its step equals ``torch.optim.Muon``'s on the flattened filter matrix, every
method that does not bring its own optimizer trains with it, checkpoints resume exactly, the Riemannian
methods and a torch without Muon are refused in one line, and ``oblique study --optimizers`` plans both."""

from __future__ import annotations

import copy
import io
import math

import pandas as pd
import pytest
import torch
from torch import nn

from oblique import get_method, list_methods, records
from oblique.cli import main
from oblique.config import ConfigError, RunConfig
from oblique.layers import Transposed
from oblique.methods import REGISTRY, OptimizerConfig, training_step
from oblique.methods.muon import FilterMuon
from oblique.options import OptionError
from oblique.study import RESULTS_FILE, StudySpec, expand, load_study, results_frame, spec_from_tables
from oblique.study.reference import reference_runs
from oblique.train import resume, train

#: a few quick steps: 240 training samples of MNIST-1D, batches of 80 (3 steps an epoch)
TINY = dict(epochs=1, batch_size=80, data_options={"num_samples": 400}, threads=1, progress=False)
RIEMANNIAN = [m for m in list_methods() if REGISTRY[m].kind == "riemannian"]
EUCLIDEAN = [m for m in list_methods() if REGISTRY[m].kind != "riemannian"]
SGD = dict(lr=0.1, momentum=0.9, nesterov=True)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )


def _loss(net: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 5, (8,), generator=g)
    return nn.functional.cross_entropy(net(x), y)


def test_one_step_is_torch_muon_on_the_flattened_filter_matrix_and_sgd_on_the_rest():
    """Three steps with momentum: the conv and linear weights move exactly as torch.optim.Muon moves
    W.reshape(C_out, -1) given the same gradients; every other parameter exactly as torch.optim.SGD."""
    net = _net()
    ref = copy.deepcopy(net)
    method = get_method("baseline", targets="conv+linear")
    method.prepare(net)
    opt = method.make_optimizer(net, OptimizerConfig(name="muon", others="sgd", **SGD))
    assert isinstance(opt, FilterMuon) and isinstance(opt, torch.optim.Optimizer)

    weights = [ref[0].weight, ref[4].weight]
    mats = [nn.Parameter(w.detach().reshape(w.shape[0], -1).clone()) for w in weights]
    ref_muon = torch.optim.Muon(mats, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True)
    rest = [p for p in ref.parameters() if all(p is not w for w in weights)]
    ref_sgd = torch.optim.SGD(rest, **SGD, weight_decay=0.0)
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        _loss(net, step).backward()
        opt.step()
        ref.zero_grad(set_to_none=True)
        _loss(ref, step).backward()
        for w, m in zip(weights, mats, strict=True):
            m.grad = w.grad.reshape(m.shape).clone()
        ref_muon.step()
        ref_sgd.step()
        with torch.no_grad():
            for w, m in zip(weights, mats, strict=True):
                w.copy_(m.reshape(w.shape))
        for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
            if name.endswith("weight") and p.dim() > 1:  # Muon: to float32 rounding
                torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
            else:  # SGD, exactly
                assert torch.equal(p, q), name
    assert not torch.equal(net[0].weight, _net()[0].weight)  # it moved


def test_a_filter_matrix_that_is_no_view_is_stepped_and_written_back():
    """A grouped transposed convolution's filters (per-group slices) and a channels-last conv weight are
    not views of the weight: Muon steps the filter matrix t.filters(W) and writes it back."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, bias=False), nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False))
    net = net.to(memory_format=torch.channels_last)
    ref = copy.deepcopy(net)
    method = get_method("baseline", targets="conv+conv_transpose")
    method.prepare(net)
    opt = method.make_optimizer(net, OptimizerConfig(name="muon"))
    assert opt._views == [False, False]
    layouts = [t.layout for t in method.target_modules(net)]
    assert layouts[1] == Transposed(groups=2)
    weights = [ref[0].weight, ref[1].weight]
    mats = [nn.Parameter(lay.filters(w.detach()).clone()) for w, lay in zip(weights, layouts, strict=True)]
    ref_muon = torch.optim.Muon(mats, lr=0.02, weight_decay=0.0)
    x = torch.randn(2, 4, 7, 7).to(memory_format=torch.channels_last)
    for _ in range(3):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        ref.zero_grad()
        ref(x).square().mean().backward()
        for w, m, lay in zip(weights, mats, layouts, strict=True):
            m.grad = lay.filters(w.grad).clone()
        ref_muon.step()
        with torch.no_grad():
            for w, m, lay in zip(weights, mats, layouts, strict=True):
                w.copy_(lay.weight(m, w.shape))
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_a_scheduler_scales_both_parts_and_the_state_round_trips():
    net = _net()
    method = get_method("nl", targets="conv")
    method.prepare(net)
    opt = method.make_optimizer(net, OptimizerConfig(name="muon", others="adam", lr=1e-3, muon_lr=0.04))
    assert isinstance(opt.others, torch.optim.Adam) and isinstance(opt.muon, torch.optim.Muon)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** (s + 1))
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 0.02]  # the others' groups first, Muon's last
    assert opt.param_groups[0]["params"] and opt.param_groups[-1]["params"] == [net[0].weight]
    _loss(net, 0).backward()
    opt.step()
    sched.step()
    assert opt.muon.param_groups[0]["lr"] == 0.02  # the lr it stepped with
    assert [g["lr"] for g in opt.param_groups] == [2.5e-4, 0.01]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as a checkpoint holds it: tensors and plain containers
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)

    twin = copy.deepcopy(net)
    twin_method = get_method("nl", targets="conv")
    twin_method.prepare(twin)
    again = twin_method.make_optimizer(
        twin, OptimizerConfig(name="muon", others="adam", lr=1e-3, muon_lr=0.04)
    )
    again_sched = torch.optim.lr_scheduler.LambdaLR(again, lambda s: 0.5 ** (s + 1))
    again.load_state_dict(state)
    again_sched.load_state_dict(sched.state_dict())
    assert [g["lr"] for g in again.param_groups] == [2.5e-4, 0.01]
    for a, b, s in ((opt, sched, net), (again, again_sched, twin)):
        a.zero_grad()
        _loss(s, 1).backward()
        a.step()
        b.step()
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="not a FilterMuon state"):
        again.load_state_dict(torch.optim.SGD(net.parameters(), lr=0.1).state_dict())


def test_every_parameter_targeted_leaves_no_other_optimizer():
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    method = get_method("baseline", targets="linear")
    method.prepare(net)
    opt = method.make_optimizer(net, OptimizerConfig(name="muon"))
    assert opt.others is None and len(opt.param_groups) == 1
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    opt.load_state_dict(opt.state_dict())


def test_adamw_decays_only_the_untargeted_parameters():
    net = _net()
    method = get_method("nl")
    method.prepare(net)
    opt = method.make_optimizer(net, OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05))
    assert type(opt) is torch.optim.AdamW
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.05]
    assert opt.param_groups[0]["params"] == [net[0].weight]


@pytest.mark.parametrize("method", EUCLIDEAN)
def test_muon_trains_every_method_that_does_not_bring_its_own_optimizer(method, tmp_path):
    summary = train(RunConfig(method=method, optimizer="muon", out=str(tmp_path / "r"), **TINY))
    assert summary["status"] == "ok"
    losses = [s["loss"] for s in records.read_metrics(tmp_path / "r", "step")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    config = records.read_config(tmp_path / "r")
    assert config["optimizer"] == "muon" and config["muon_lr"] == 0.02
    assert config["muon"]["others"] == "sgd" and config["muon"]["lr"] == 0.02  # the resnet1d recipe's SGD
    assert config["muon"]["weight_decay"] == 0.0 and config["muon"]["momentum"] == 0.95


def test_adamw_trains_and_is_recorded(tmp_path):
    summary = train(RunConfig(method="nl", optimizer="adamw", lr=1e-3, out=str(tmp_path / "r"), **TINY))
    assert summary["status"] == "ok"
    config = records.read_config(tmp_path / "r")
    assert config["optimizer"] == "adamw" and "muon" not in config and "muon_lr" not in config


@pytest.mark.parametrize("method", RIEMANNIAN)
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_riemannian_method_refuses_another_optimizer_in_one_line(method, optimizer, tmp_path, capsys):
    with pytest.raises(ConfigError, match="brings its own Riemannian optimizer, sgd or adam"):
        RunConfig(method=method, optimizer=optimizer).resolved().validate()
    assert main(["run", "--method", method, "--optimizer", optimizer, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"oblique: error: --optimizer {optimizer} does not apply to method {method}: it brings its own "
        "Riemannian optimizer, sgd or adam"
    ]
    assert not (tmp_path / "r").exists()
    net = nn.Sequential(nn.Conv1d(2, 4, 3))  # the library refuses it too, before building anything
    m = get_method(method)
    m.prepare(net)
    with pytest.raises(OptionError, match="brings its own Riemannian optimizer"):
        m.make_optimizer(net, OptimizerConfig(name=optimizer))


def test_without_torch_muon_the_optimizer_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(ConfigError, match=r"needs torch.optim.Muon, which came with torch 2.9"):
        RunConfig(optimizer="muon").resolved().validate()
    assert main(["run", "--optimizer", "muon", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("oblique: error: --optimizer muon needs torch.optim.Muon")
    net = _net()
    with pytest.raises(OptionError, match="needs torch.optim.Muon"):
        get_method("nl").make_optimizer(net, OptimizerConfig(name="muon"))
    RunConfig(optimizer="adamw").resolved().validate()  # the others are unaffected


def test_muon_lr_is_for_muon_only_and_a_run_without_it_keeps_its_identity():
    plain = RunConfig()
    assert "muon_lr" not in plain.recorded() and "muon_lr" not in plain.identity()
    assert RunConfig(optimizer="muon").identity()["muon_lr"] == 0.02
    assert RunConfig(optimizer="muon", muon_lr=0.05).resolved().muon_lr == 0.05
    with pytest.raises(ConfigError, match="muon_lr applies to optimizer muon only"):
        RunConfig(muon_lr=0.05).resolved().validate()


def test_a_muon_run_resumes_exactly(tmp_path, monkeypatch):
    """Killed after its first checkpoint and resumed, a Muon run ends as the uninterrupted one
    (tests/test_checkpoints.py, for every method with its recipe's optimizer)."""
    from test_checkpoints import _Killed, _same_run

    settings = dict(method="nl", optimizer="muon", **{**TINY, "epochs": 2})
    train(RunConfig(out=str(tmp_path / "whole"), **settings))
    real = records.RunWriter.checkpoint

    def checkpoint_then_die(self, state):
        real(self, state)
        raise _Killed

    monkeypatch.setattr(records.RunWriter, "checkpoint", checkpoint_then_die)
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        train(RunConfig(out=str(out), checkpoint_every=1, **settings))
    monkeypatch.setattr(records.RunWriter, "checkpoint", real)
    assert resume(out)["resumed_at"] == [3]
    _same_run(tmp_path / "whole", out)


def test_the_optimizers_axis_plans_each_and_keeps_old_runs_as_they_were():
    runs = expand(
        StudySpec(
            methods=["nl", *RIEMANNIAN],
            seeds=[0],
            optimizers=["sgd", "muon"],
            base={"epochs": 1, "muon_lr": 0.05},
        )
    )
    names = {r.name: (r.settings["optimizer"], r.settings.get("muon_lr")) for r in runs}
    assert names["nl_lam0.01_bs100_optimizersgd_seed0"] == ("sgd", None)  # muon_lr: the Muon runs' only
    assert names["nl_lam0.01_bs100_optimizermuon_seed0"] == ("muon", 0.05)
    for m in RIEMANNIAN:  # a Riemannian method runs with the optimizers it takes
        assert [r.grid["optimizer"] for r in runs if r.grid["method"] == m] == ["sgd"]
    same = expand(
        StudySpec(methods=["nl"], seeds=[0], grid={"optimizer": ["sgd", "muon"]}, base={"epochs": 1})
    )
    assert [r.name for r in same] == [
        "nl_lam0.01_bs100_optimizersgd_seed0",
        "nl_lam0.01_bs100_optimizermuon_seed0",
    ]
    (old,) = expand(StudySpec(methods=["nl"], seeds=[0], base={"epochs": 1}))
    assert (
        old.name == "nl_lam0.01_bs100_seed0" and "optimizer" not in old.grid and "muon_lr" not in old.settings
    )
    spec, _ = spec_from_tables({"study": {"methods": ["nl"], "optimizers": ["sgd", "adamw"]}})
    assert spec.optimizers == ["sgd", "adamw"]


@pytest.mark.parametrize(
    "spec, match",
    [
        (StudySpec(methods=RIEMANNIAN[:1], optimizers=["muon"]), "none of the study's optimizers \\(muon\\)"),
        (StudySpec(methods=["nl"], optimizers=["muon"], grid={"optimizer": ["sgd"]}), "given twice"),
        (StudySpec(methods=["nl"], optimizers=["sgd"], base={"optimizer": "adam"}), "give one of them"),
        (StudySpec(methods=["nl"], optimizers=["sgd", "sgd"]), "repeated"),
        (StudySpec(methods=["nl"], optimizers=["lbfgs"]), "optimizer must be one of sgd, adam, adamw, muon"),
    ],
)
def test_a_bad_optimizers_axis_is_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        expand(spec)


def test_oblique_study_optimizers_runs_and_records_both(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["study", "--methods", "baseline", "--optimizers", "sgd,muon", "--seeds", "1", "--epochs", "1"]
    argv += ["--data-option", "num_samples=400", "--batch-sizes", "80", "--workers", "0", "--out", str(out)]
    assert main([*argv, "--no-progress", "--no-figures", "--no-bench"]) == 0
    res = pd.read_csv(out / RESULTS_FILE)
    assert list(res["optimizer"]) == ["sgd", "muon"] and (res["status"] == "ok").all()
    study = load_study(out)
    assert "optimizer" in study.grid_variables
    for name, opt in zip(res["run"], ("sgd", "muon"), strict=True):
        assert name.endswith(f"optimizer{opt}_seed0")
        assert records.read_config(study.run_dir(name))["optimizer"] == opt
    table = (out / "summary.md").read_text().splitlines()
    assert "| optimizer |" in table[0] and any("| muon |" in line for line in table[2:4])
    both = ["study", "--methods", "baseline", "--optimizers", "sgd", "--optimizer", "adam", "--out", str(out)]
    assert main(both) == 2
    err = capsys.readouterr().err
    assert "--optimizer adam is fixed for every run and --optimizers is a grid axis" in err


@pytest.mark.parametrize("move", ["double", "channels_last"])
def test_after_model_to_muon_steps_the_weights_the_model_computes_with(move):
    """A view read at construction would step the old storage after model.to(...): the filters would never
    train (channels_last) or the step would crash (float64). After the move the steps are those of the run
    that never moved, momentum carried over."""

    def pieces():
        torch.manual_seed(0)
        method = get_method("nl")
        model = method.prepare(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 2)))
        return method, model

    def one_step(model, opt, x):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    to = {"double": {"dtype": torch.float64}, "channels_last": {"memory_format": torch.channels_last}}[move]
    method, model = pieces()
    opt = method.make_optimizer(model, OptimizerConfig(name="muon"))
    one_step(model, opt, x)  # momentum in the state, then the move
    model.to(**to)
    xs = x.to(torch.float64) if move == "double" else x
    before = model[0].weight.detach().clone()
    one_step(model, opt, xs)
    assert (model[0].weight - before).abs().max() > 0
    method2, plain = pieces()  # the same two steps, never moved: the same weights, to float32 rounding
    opt2 = method2.make_optimizer(plain, OptimizerConfig(name="muon"))
    one_step(plain, opt2, x)
    one_step(plain, opt2, x)
    torch.testing.assert_close(model[0].weight.float(), plain[0].weight, rtol=1e-4, atol=1e-5)


def test_a_riemannian_method_keeps_its_place_when_the_axis_starts_with_an_optimizer_it_refuses(tmp_path):
    """--optimizers muon,sgd runs oblique-rsgd with sgd alone: the reference setting (the grid, the claims,
    the figures) takes each method at its own first optimizer, not the study's first."""
    out = tmp_path / "s"
    argv = ["study", "--methods", "baseline,oblique-rsgd", "--optimizers", "muon,sgd", "--seeds", "1"]
    argv += ["--epochs", "1", "--data-option", "num_samples=400", "--batch-sizes", "80", "--workers", "0"]
    assert main([*argv, "--out", str(out), "--no-progress", "--no-figures", "--no-bench"]) == 0
    study = load_study(out)
    ref = reference_runs(study, results_frame(study))
    assert sorted(zip(ref["method"], ref["optimizer"], strict=True)) == [
        ("baseline", "muon"),
        ("oblique-rsgd", "sgd"),
    ]
    assert "**oblique-rsgd**" in (out / "summary.md").read_text()  # in the grid


def test_a_grad_scaler_unscales_the_filters_gradients_before_muon_sees_them():
    """fp16's GradScaler (:func:`oblique.methods.base.training_step`) unscales the gradients of the
    optimizer's parameters: the Muon group holds the model's weights, so Norm Loss's closed form adds to
    true gradients and Muon steps their sum."""
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        net = _net()
        method = get_method("nl", strength=1.0)
        method.prepare(net)
        opt = method.make_optimizer(net, OptimizerConfig(name="muon"))
        for step in range(2):
            training_step(method, net, opt, _loss(net, step), step + 1, scaler=scaler)
        runs.append(list(net.parameters()))
    for p, q in zip(*runs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
