"""The training loop (oblique.fit): no host sync in a step, bf16 with fp32 manifold maths, channels-last,
records independent of --log-every, the sync-free evaluation."""

from __future__ import annotations

import pytest
import torch

from oblique import list_methods, records
from oblique.batches import Batches
from oblique.config import RunConfig
from oblique.data import TensorData
from oblique.fit import evaluate, fit, test_batches
from oblique.methods import OptimizerConfig, get_method
from oblique.models import get_model
from oblique.train import train

VARIANTS = [(m, {}) for m in list_methods()] + [
    ("nl", {"form": "autograd"}),
    ("oblique-rsgd", {"impl": "geoopt"}),
]
IDS = [m + "".join(f"-{v}" for v in hp.values()) for m, hp in VARIANTS]

SYNC_CALLS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests step ResNets hundreds of times: one thread is as fast here and steady on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _synthetic(n: int, dtype=torch.float32, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(
        torch.randn(n, 3, 32, 32, generator=g, dtype=dtype), torch.randint(10, (n,), generator=g)
    )


def _prepared(method_name: str, hp: dict, model_name: str = "resnet20", dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    method = get_method(method_name, **hp)
    model = method.prepare(get_model(model_name, num_classes=10, in_channels=3).to(dtype))
    optimizer = method.make_optimizer(model, OptimizerConfig(lr=0.01, momentum=0.9, nesterov=True))
    return method, model, optimizer


class _SyncCounter:
    """Counts the Python-level calls that make the host wait for a tensor's value."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in SYNC_CALLS:
            real = getattr(torch.Tensor, name)

            def counted(self_, *args, _real=real, **kwargs):
                self.count += 1
                return _real(self_, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _syncs_in_100_steps(method_name, hp, model_name, tmp_path, monkeypatch) -> int:
    method, model, optimizer = _prepared(method_name, hp, model_name)
    batches = Batches(
        _synthetic(100), 4, generator=torch.Generator().manual_seed(0), drop_last=True
    )  # 25 steps
    with records.RunWriter(tmp_path / model_name) as writer, monkeypatch.context() as m:
        counter = _SyncCounter(m)
        state = fit(model, method, optimizer, batches, epochs=4, drift_every=25, log_every=25, writer=writer)
    assert state.step == 100 and state.diverged_step is None
    return counter.count


@pytest.mark.slow
@pytest.mark.parametrize(("method", "hp"), VARIANTS, ids=IDS)
def test_a_step_does_not_wait_for_the_device(method, hp, tmp_path, monkeypatch):
    """Acceptance: at most a few host syncs per --log-every window (here 25 steps: 4 windows in 100 steps),
    and as many on ResNet-32 as on ResNet-20 (independent of the number of layers)."""
    n20 = _syncs_in_100_steps(method, hp, "resnet20", tmp_path, monkeypatch)
    n32 = _syncs_in_100_steps(method, hp, "resnet32", tmp_path, monkeypatch)
    assert n20 <= 4 * 4, f"{method}: {n20} syncs in 100 steps"  # one flush + a few per window
    assert n20 == n32


@pytest.mark.parametrize(("method", "hp"), VARIANTS, ids=IDS)
def test_bf16_trains_with_the_manifold_maths_in_float32(method, hp):
    """Acceptance: under bf16 autocast on the CPU every method trains ResNet-20 for a few steps; the
    weights the convolutions receive (ONI's, OLM's, WN's effective weights) and every targeted tensor
    after the optimizer's step and the projections are float32."""
    m, model, optimizer = _prepared(method, hp)
    seen: list[torch.dtype] = []
    for module in {id(t.module): t.module for t in m.target_modules(model)}.values():
        module.register_forward_pre_hook(lambda mod, args: seen.append(mod.weight.dtype))
    batches = Batches(_synthetic(16), 4, generator=torch.Generator().manual_seed(0), drop_last=True)
    state = fit(model, m, optimizer, batches, epochs=1, log_every=2, precision="bf16")
    assert state.step == 4 and state.diverged_step is None
    assert seen and set(seen) == {torch.float32}
    assert all(w.dtype == torch.float32 for w in m.target_weights(model))
    assert all(w.dtype == torch.float32 for w in m.effective_weights(model).values())


@pytest.mark.parametrize(("method", "hp"), VARIANTS, ids=IDS)
def test_channels_last_takes_the_same_trajectory_as_contiguous(method, hp):
    """Acceptance: --channels-last gives the same trajectory as contiguous memory (float64)."""
    results = []
    for channels_last in (False, True):
        m, model, optimizer = _prepared(method, hp, dtype=torch.float64)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            model._oblique_channels_last = True
        batches = Batches(
            _synthetic(12, torch.float64), 4, generator=torch.Generator().manual_seed(0), drop_last=True
        )
        fit(model, m, optimizer, batches, epochs=1, log_every=3)
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    plain, cl = results
    for k in plain:
        torch.testing.assert_close(cl[k], plain[k], rtol=1e-10, atol=1e-12, msg=k)


def test_records_do_not_depend_on_log_every(tmp_path):
    """Acceptance: the CPU records of `oblique run` are the same whatever --log-every (default 50)."""
    settings = dict(epochs=1, batch_size=200, drift_every=7, threads=1, progress=False)
    for method in ("nl", "srip"):
        train(RunConfig(method=method, out=str(tmp_path / f"{method}-default"), **settings))
        train(RunConfig(method=method, out=str(tmp_path / f"{method}-1"), log_every=1, **settings))
        a = (tmp_path / f"{method}-default" / records.METRICS).read_bytes()
        assert a == (tmp_path / f"{method}-1" / records.METRICS).read_bytes()


def test_evaluate_reads_once_and_counts_errors():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(3, 4))
        model[1].bias.zero_()
    x = torch.eye(4)[:3].repeat(2, 1)  # rows e0, e1, e2 twice: logits argmax = the row's index
    y = torch.tensor([0, 1, 0, 0, 1, 2])  # one of six wrong (the third)
    out = evaluate(model, test_batches(TensorData(x, y), 4), "cpu")
    assert out["test_error"] == pytest.approx(100 / 6) and out["test_error_top5"] == 0.0


def test_weights_an_eigendecomposition_cannot_take_end_the_run_as_diverged(tmp_path):
    """OLM whose weights went non-finite (e.g. at a huge lr): eigh raises before the loss can show it; the
    run is recorded as diverged at that step, not a traceback."""
    method = get_method("olm")
    model = method.prepare(get_model("cnn", num_classes=10, in_channels=1))
    optimizer = method.make_optimizer(model, OptimizerConfig(lr=0.01))
    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randn(40, 1, 40, generator=g), torch.randint(10, (40,), generator=g))

    class Poisoned:  # the third batch finds non-finite weights
        def __len__(self):
            return 4

        def __iter__(self):
            for i in range(4):
                if i == 2:
                    with torch.no_grad():
                        for w in method.target_weights(model):
                            w.fill_(float("nan"))
                yield data[slice(10 * i, 10 * i + 10)]

    with records.RunWriter(tmp_path) as writer:
        state = fit(
            model, method, optimizer, Poisoned(), epochs=1, log_every=50, drift_every=1, writer=writer
        )
    assert state.diverged_step == 3
    last = records.read_metrics(tmp_path)[-1]
    assert last["type"] == "diverged" and last["step"] == 3


@pytest.mark.parametrize("name", ["nl", "so"])
def test_a_strength_schedule_is_recorded_at_every_logged_step(name, tmp_path):
    """Each step record carries the λ the step used; the regularizer is divided by that step's λ, not the
    one of the step the records were flushed at. A constant λ writes no column (config.json has it)."""
    import oblique.fit as fitting

    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randn(60, 1, 40, generator=g), torch.randint(10, (60,), generator=g))

    def run(strength, out):
        torch.manual_seed(0)
        method = get_method(name, strength=strength)
        model = method.prepare(get_model("cnn", num_classes=10, in_channels=1))
        optimizer = method.make_optimizer(model, OptimizerConfig(lr=0.01))
        batches = Batches(data, 10, generator=torch.Generator().manual_seed(0), drop_last=True)
        with records.RunWriter(out) as writer:
            fit(model, method, optimizer, batches, epochs=1, log_every=3, drift_every=3, writer=writer)
        return [r for r in records.read_metrics(out) if r["type"] == "step"]

    scheduled = run(lambda s: 0.01 * s, tmp_path / "scheduled")
    assert [r["strength"] for r in scheduled] == pytest.approx([0.01 * s for s in range(1, 7)])
    constant = run(0.03, tmp_path / "constant")  # the same weights at step 1: the same regularizer value
    assert "strength" not in constant[0]
    assert scheduled[0]["reg"] == pytest.approx(constant[0]["reg"], rel=1e-6)
    # a resumed fit (a fresh method, the state of step 6) goes on with step 7's λ, not step 1's
    method = get_method(name, strength=lambda s: 0.01 * s)
    model = method.prepare(get_model("cnn", num_classes=10, in_channels=1))
    optimizer = method.make_optimizer(model, OptimizerConfig(lr=0.01))
    batches = Batches(data, 10, generator=torch.Generator().manual_seed(0), drop_last=True)
    done = fitting.FitState(step=6, epochs_done=1)
    fit(model, method, optimizer, batches, epochs=1, state=done)
    assert method.strength == pytest.approx(0.07)


def test_fp16_steps_through_a_grad_scaler_whose_scale_the_checkpoint_keeps(tmp_path, monkeypatch):
    """fit's fp16 path (CUDA's; run here on the CPU, whose fp16 autocast torch 2.13 has, by widening
    FP16_DEVICES): a GradScaler scales the loss, the closed form adds to unscaled gradients, the checkpoint
    carries the scale and a resumed fit goes on with it. On the CPU fit itself refuses fp16."""
    import oblique.fit as fitting

    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randn(60, 1, 40, generator=g), torch.randint(10, (60,), generator=g))

    def pieces():
        torch.manual_seed(0)
        method = get_method("nl", strength=0.5)
        model = method.prepare(get_model("cnn", num_classes=10, in_channels=1))
        optimizer = method.make_optimizer(model, OptimizerConfig(lr=0.01))
        return (
            method,
            model,
            optimizer,
            Batches(data, 10, generator=torch.Generator().manual_seed(0), drop_last=True),
        )

    method, model, optimizer, batches = pieces()
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA GPU"):
        fit(model, method, optimizer, batches, epochs=1, precision="fp16")
    monkeypatch.setattr(fitting, "FP16_DEVICES", ("cuda", "cpu"))
    with records.RunWriter(tmp_path) as writer:
        state = fit(
            model, method, optimizer, batches, epochs=2, precision="fp16", writer=writer, checkpoint_every=1
        )  # the checkpoint after epoch 1 (none after the last)
    assert state.diverged_step is None and method.check(model)[0]
    saved = records.read_checkpoint(tmp_path)["fit_state"]["grad_scaler"]
    assert saved["scale"] == 2.0**16  # torch's initial scale, no overflow in 6 steps
    # a resumed fit takes the scale from the state (here one an overflow halved)
    method, model, optimizer, batches = pieces()
    resumed = fitting.FitState(grad_scaler={**saved, "scale": 2.0**10})
    loop = fitting._Loop(
        model, method, optimizer, batches, None, None, resumed, torch.device("cpu"),
        log_every=50, precision="fp16", dist=fitting.Dist(),
    )  # fmt: skip
    assert loop.scaler.get_scale() == 2.0**10
