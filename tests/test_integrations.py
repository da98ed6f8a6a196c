"""The integrations, run for real: a PyTorch Lightning ``Trainer`` and a Hugging Face ``Trainer`` (a GPT-2
from a tiny config), fp32 and bf16, with nl, oni, pbwn and oblique-rsgd."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import oblique
from oblique.methods import MethodUseError, OptimizerConfig, get_method

L = pytest.importorskip("lightning.pytorch")  # the dev extra installs them: CI never skips
transformers = pytest.importorskip("transformers")

from oblique.integrations.lightning import ObliqueCallback as LightningCallback  # noqa: E402
from oblique.integrations.transformers import ObliqueCallback as HFCallback  # noqa: E402

#: the methods and the settings they are checked at: on the manifold (ONI with scale 1 and enough iterations)
METHODS = {"nl": {}, "oni": {"scale": 1.0, "iters": 15}, "pbwn": {}, "oblique-rsgd": {}}


@pytest.fixture(autouse=True)
def _quiet_frameworks():
    """The frameworks' own advice (no GPU, few workers, a small batch count) is not ours to test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------------ Lightning
class _Lit(L.LightningModule):
    def __init__(self, callback: LightningCallback):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv1d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(8, 8, 3, padding=1),
            nn.Flatten(),
            nn.Linear(96, 4),
        )
        self.callback = callback

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return self.callback.make_optimizer(self, OptimizerConfig(lr=0.05))


def _loader():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 12, generator=g), torch.randint(0, 4, (64,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def _lightning(name, precision, tmp_path, epochs=2, ckpt=None, **hp):
    """``epochs`` of 4 steps each (Lightning resumes a plain DataLoader exactly at an epoch's end)."""
    method = get_method(name, targets="conv+linear", **{**METHODS.get(name, {}), **hp})
    callback = LightningCallback(method, drift_every=4)
    module = _Lit(callback)
    trainer = L.Trainer(
        max_epochs=epochs,
        precision=precision,
        callbacks=[callback],
        logger=L.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(module, _loader(), ckpt_path=ckpt)
    return method, module, trainer


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("name", list(METHODS))
def test_a_lightning_trainer_trains_with_the_method(name, precision, tmp_path):
    method, module, trainer = _lightning(name, precision, tmp_path)
    assert trainer.global_step == 8
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert method.check(module)[0], method.check(module)[1]
    assert "oblique_norm_dev_mean" in trainer.logged_metrics


def test_lightning_norm_loss_drifts_less_than_baseline_and_a_checkpoint_resumes(tmp_path):
    nl, module, _ = _lightning("nl", "32-true", tmp_path / "nl", epochs=4, strength=0.5)
    base, plain, _ = _lightning("baseline", "32-true", tmp_path / "base", epochs=4)
    drift = lambda m, meth: oblique.model_drift(m, weights=meth.effective_filters(m))["mean"]["norm_dev_mean"]  # noqa: E731
    assert drift(module, nl) < drift(plain, base)
    # resume: 2 epochs, checkpoint, 2 more == 4 straight
    _, half, trainer = _lightning("oni", "32-true", tmp_path / "a", epochs=2)
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    _, resumed, _ = _lightning("oni", "32-true", tmp_path / "b", epochs=4, ckpt=str(path))
    _, straight, _ = _lightning("oni", "32-true", tmp_path / "c", epochs=4)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_lightning_with_a_euclidean_optimizer_for_oblique_rsgd_is_refused(tmp_path):
    class Wrong(_Lit):
        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)

    method = get_method("oblique-rsgd", targets="conv+linear")
    callback = LightningCallback(method)
    trainer = L.Trainer(
        max_steps=2,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    with pytest.raises(MethodUseError, match="not a Euclidean optimizer such as torch.optim.AdamW"):
        trainer.fit(Wrong(callback), _loader())


class _ScaledFP32(L.plugins.precision.MixedPrecision):
    """Lightning's fp16 plugin with a real ``GradScaler`` at 2¹⁶ and its autocast left off: the CPU has no
    fp16 training, and the gradients' scaling is what is under test."""

    def __init__(self):
        super().__init__("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))

    def forward_context(self):
        return contextlib.nullcontext()


@pytest.mark.parametrize("name", ["nl", "so"])
def test_lightning_through_a_grad_scaler_ends_with_the_unscaled_weights(name, tmp_path):
    def run(plugins):
        method = get_method(name, targets="conv+linear", strength=0.5)
        callback = LightningCallback(method, drift_every=0)
        module = _Lit(callback)
        trainer = L.Trainer(
            max_epochs=2,
            callbacks=[callback],
            plugins=plugins,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            accelerator="cpu",
            default_root_dir=tmp_path,
        )
        trainer.fit(module, _loader())
        return module, trainer

    plain, _ = run([])
    scaled, trainer = run([_ScaledFP32()])
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**16  # scaled all along, no step skipped
    for a, b in zip(plain.state_dict().values(), scaled.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------ Hugging Face
class _Tokens(torch.utils.data.Dataset):
    def __init__(self):
        self.ids = torch.randint(0, 40, (32, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=40, n_positions=16)
    return transformers.GPT2LMHeadModel(cfg)


def _hf(name, bf16, tmp_path, max_steps=6, resume=None, **hp):
    model = _gpt2()
    method = get_method(name, targets="all", exclude=["lm_head"], **{**METHODS.get(name, {}), **hp})
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        bf16=bf16,
        use_cpu=True,
        report_to=[],
        logging_steps=2,
        save_steps=3,
        save_strategy="steps",
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    kwargs = {}
    if method.kind == "riemannian":  # it brings its own optimizer: prepared first, handed to the Trainer
        method.prepare(model)
        kwargs["optimizers"] = (method.make_optimizer(model, OptimizerConfig(lr=1e-2)), None)
        callback = HFCallback(method, prepare=False)
    else:
        callback = HFCallback(method)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=_Tokens(), callbacks=[callback], **kwargs
    )
    trainer.train(resume_from_checkpoint=resume)
    return method, model, trainer


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(METHODS))
def test_a_hugging_face_trainer_trains_gpt2_with_the_method(name, bf16, tmp_path):
    method, model, trainer = _hf(name, bf16, tmp_path)
    assert trainer.state.global_step == 6
    assert model.lm_head.weight is model.transformer.wte.weight
    assert method.check(model)[0], method.check(model)[1]
    assert any("oblique_norm_dev_mean" in log for log in trainer.state.log_history)


def test_hugging_face_norm_loss_drifts_less_than_baseline_and_a_checkpoint_resumes(tmp_path):
    nl, model, _ = _hf("nl", False, tmp_path / "nl", strength=0.5)
    base, plain, _ = _hf("baseline", False, tmp_path / "base")
    drift = lambda m, meth: oblique.model_drift(m, weights=meth.effective_filters(m))["mean"]["norm_dev_mean"]  # noqa: E731
    assert drift(model, nl) < drift(plain, base)
    _, straight, _ = _hf("pbwn", False, tmp_path / "s")
    _, resumed, _ = _hf("pbwn", False, tmp_path / "s", resume=str(tmp_path / "s" / "checkpoint-3"))
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", ["nl", "so"])
def test_hugging_face_through_a_grad_scaler_ends_with_the_unscaled_weights(name, tmp_path):
    """The ``Trainer``'s accelerator given a real ``GradScaler`` at 2¹⁶ (fp16's, which the CPU cannot run):
    it scales the loss in backward and steps through the scaler. No clipping, so nothing unscales the
    gradients before the callback: it must (without, Norm Loss's closed form is divided by 2¹⁶)."""

    def run(scaler):
        model = _gpt2()
        method = get_method(name, targets="all", exclude=["lm_head"], strength=0.5)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=4,
            per_device_train_batch_size=8,
            learning_rate=1e-2,
            max_grad_norm=0.0,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
            data_seed=0,
        )
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=_Tokens(), callbacks=[HFCallback(method)]
        )
        trainer.accelerator.scaler = scaler  # before train(): the optimizer is wrapped with it there
        trainer.train()
        return model

    plain = run(None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaled = run(scaler)
    assert scaler.get_scale() == 2.0**16
    for a, b in zip(plain.state_dict().values(), scaled.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
