"""The integrations, run for real: a PyTorch Lightning ``Trainer`` and a Hugging Face ``Trainer`` (a GPT-2
from a tiny config), fp32 and bf16, with nl, oni, pbwn and oblique-rsgd."""

from __future__ import annotations

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
