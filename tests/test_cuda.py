"""What only a GPU can show: the sync-free step, data on the device, CUDA-event timing, bf16 there, resume
there. Skipped without CUDA (run by scripts/gpu_check.sh on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from oblique import records
from oblique.batches import Batches
from oblique.config import RunConfig
from oblique.data import TensorData
from oblique.fit import fit
from oblique.methods import OptimizerConfig, get_method
from oblique.models import get_model
from oblique.train import resume, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SYNC_CALLS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__")


def _on_gpu(n: int = 64) -> TensorData:
    g = torch.Generator().manual_seed(0)
    return TensorData(torch.randn(n, 3, 32, 32, generator=g), torch.randint(10, (n,), generator=g)).to("cuda")


@pytest.mark.parametrize("name", ["nl", "oni", "olm", "srip", "oblique-rsgd", "wn"])
def test_a_cuda_step_waits_for_nothing_but_the_flush(name, tmp_path, monkeypatch):
    torch.manual_seed(0)
    method = get_method(name)
    model = method.prepare(get_model("resnet20", num_classes=10, in_channels=3).cuda())
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.01))
    gen = torch.Generator(device="cuda").manual_seed(0)
    batches = Batches(_on_gpu(), 8, generator=gen, drop_last=True)  # 8 steps an epoch, cut on the GPU
    count = [0]
    with records.RunWriter(tmp_path) as writer, monkeypatch.context() as m:
        for call in SYNC_CALLS:
            real = getattr(torch.Tensor, call)

            def counted(self, *a, _real=real, **k):
                count[0] += 1
                return _real(self, *a, **k)

            m.setattr(torch.Tensor, call, counted)
        fit(model, method, opt, batches, epochs=4, drift_every=16, log_every=16, writer=writer)
    assert count[0] <= 3  # the first drift record and one flush per 16 steps


class _Killed(Exception):
    pass


def test_cuda_records_time_the_regularizer_with_events_and_resume(tmp_path, monkeypatch):
    cfg = dict(
        method="srip",
        model="resnet20",
        dataset="synthetic",
        epochs=3,
        batch_size=32,
        device="cuda",
        deterministic=True,
        checkpoint_every=1,
        progress=False,
    )
    s = train(RunConfig(out=str(tmp_path / "a"), **cfg))
    assert s["status"] == "ok" and 0 < s["regularizer_time_s"] < s["train_time_s"]
    env = records.read_config(tmp_path / "a")["environment"]
    assert env["device_name"] != "cpu" and env["cudnn_benchmark"] is False
    real = records.RunWriter.checkpoint

    def checkpoint_then_die(self, state):
        real(self, state)
        raise _Killed

    monkeypatch.setattr(records.RunWriter, "checkpoint", checkpoint_then_die)
    with pytest.raises(_Killed):
        train(RunConfig(out=str(tmp_path / "b"), **cfg))
    monkeypatch.setattr(records.RunWriter, "checkpoint", real)
    resume(tmp_path / "b")  # deterministic on the GPU: the same records as the uninterrupted run
    assert (tmp_path / "a" / records.METRICS).read_bytes() == (tmp_path / "b" / records.METRICS).read_bytes()


@pytest.mark.parametrize("name", ["oni", "olm", "wn", "nl"])
def test_bf16_on_cuda_keeps_the_manifold_maths_in_float32(name):
    torch.manual_seed(0)
    method = get_method(name)
    model = method.prepare(get_model("resnet20", num_classes=10, in_channels=3).cuda())
    seen = []
    for module in {id(t.module): t.module for t in method.target_modules(model)}.values():
        module.register_forward_pre_hook(lambda mod, args: seen.append(mod.weight.dtype))
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.01))
    batches = Batches(_on_gpu(32), 8, generator=torch.Generator(device="cuda").manual_seed(0), drop_last=True)
    state = fit(model, method, opt, batches, epochs=2, precision="bf16", log_every=4)
    assert state.diverged_step is None and set(seen) == {torch.float32}


@pytest.mark.parametrize("name", ["nl", "oni", "oblique-rsgd"])
def test_fp16_on_cuda_trains_through_a_grad_scaler(name):
    """fit's fp16: autocast fp16, a GradScaler; the manifold maths in float32, finite weights, the method's
    promise kept (nl: none)."""
    torch.manual_seed(0)
    method = get_method(name, **({"scale": 1.0, "iters": 15} if name == "oni" else {}))
    model = method.prepare(get_model("resnet20", num_classes=10, in_channels=3).cuda())
    opt = method.make_optimizer(model, OptimizerConfig(lr=0.01))
    gen = torch.Generator(device="cuda").manual_seed(0)
    state = fit(
        model, method, opt, Batches(_on_gpu(), 8, generator=gen, drop_last=True), epochs=1, precision="fp16"
    )
    assert state.diverged_step is None
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(w.dtype == torch.float32 for w in method.effective_weights(model).values())
    assert method.check(model)[0], method.check(model)[1]
