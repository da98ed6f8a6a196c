"""One training run, end to end: data, model, method, optimizer, schedule, records.

:func:`train` takes a :class:`RunConfig`, writes a run directory (see :mod:`oblique.records`) and returns
the summary. The step is the method interface's (``oblique.methods.base``)::

    loss = CE(model(x), y)          # the target loss
    pen  = method.penalty(model)    # soft methods; its backward is run separately, so it can be timed
    method.before_step(model)       # closed-form gradients (Norm Loss, fused)
    optimizer.step(); method.after_step(model, step)   # projections

``regularizer_time_s`` is the wall time of the penalty, its backward, ``before_step`` and ``after_step``.
The cost of a reparametrization (wn, oni, olm) lives inside the model's forward and backward and is not
separable inside a training run: ``oblique bench`` isolates it.

Determinism: with the same config and seed on the CPU, two runs give identical records (the data order,
the initialization and every random op are seeded; the number of threads is part of the config).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from oblique import records
from oblique.config import SCHEDULES, ConfigError, RunConfig, resolve_device
from oblique.data import Data, TensorData, get_dataset
from oblique.geometry import model_drift
from oblique.methods import Method, OptimizerConfig
from oblique.methods.base import training_step
from oblique.models import get_model

__all__ = [
    "SCHEDULES",
    "Built",
    "ConfigError",
    "FitState",
    "RunConfig",
    "build",
    "evaluate",
    "fit",
    "resolve_device",
    "summarize",
    "train",
]


def _lr_factor(cfg: RunConfig, steps_per_epoch: int, total: int):
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    milestones = sorted(
        int(round((m * cfg.epochs if m < 1 else m) * steps_per_epoch)) for m in cfg.milestones
    )

    def factor(step: int) -> float:  # step counts from 0 (the lr of the first update)
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "multistep":
            return cfg.gamma ** sum(step >= m for m in milestones)
        t = (step - warm) / max(1, total - warm)  # cosine
        return 0.5 * (1 + math.cos(math.pi * t))

    return factor


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device) -> dict[str, float]:
    """Top-1 and top-5 test error (%) and mean cross-entropy over ``loader``."""
    was_training = model.training
    model.eval()
    n = wrong1 = wrong5 = 0
    loss = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices  # (B, k)
        hit = topk == y.unsqueeze(1)
        wrong1 += (~hit[:, 0]).sum().item()
        wrong5 += (~hit.any(dim=1)).sum().item()
        n += len(y)
    model.train(was_training)
    return {"test_error": 100.0 * wrong1 / n, "test_error_top5": 100.0 * wrong5 / n, "test_loss": loss / n}


def _loader(dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None, drop_last: bool):
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    if isinstance(dataset, TensorData):  # whole batches in one indexing op
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=0)


def prepare_out(cfg: RunConfig) -> Path:
    """Check and create the run directory. Refuses a finished run unless ``cfg.overwrite``."""
    out = cfg.resolved_out()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} exists and is not a folder; choose another --out", settings=("out",))
    if records.is_finished(out) and not cfg.overwrite:
        raise ConfigError(
            f"{out} already holds a finished run; pass --overwrite to replace it, or choose another --out"
        )
    if out.exists():
        for name in (records.CONFIG, records.METRICS, records.SUMMARY, records.MODEL):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------- one run, in named steps
def train(cfg: RunConfig) -> dict:
    """Run one training run as ``cfg`` says; write its run directory; return the summary dict.

    The steps: check the config, :func:`build` everything (before the run folder is touched), write
    ``config.json``, :func:`fit`, :func:`summarize`.

    Raises:
        ConfigError: an invalid setting or a finished run in ``cfg.out`` (nothing is written then).
        oblique.data.DataError: the data cannot be read.
        KeyboardInterrupt: after writing ``summary.json`` with status ``"interrupted"``.
    """
    cfg = _checked(cfg)
    run = build(cfg)
    out = prepare_out(cfg)
    with records.RunWriter(out) as writer:
        writer.config(_config_record(cfg, run, out))
        state = FitState()
        try:
            fit(run.model, run.method, run.optimizer, run.train_loader, epochs=cfg.epochs,
                test_loader=run.test_loader, scheduler=run.scheduler, device=run.device,
                drift_every=cfg.drift_every, eval_every=cfg.eval_every, writer=writer,
                progress=cfg.progress, state=state)  # fmt: skip
            summary = summarize(cfg, run.model, run.method, state)
            if cfg.save_model:
                writer.model(run.model.state_dict())
        except KeyboardInterrupt:
            # also when Ctrl-C lands after the run finished but before its records were all written
            writer.summary(summarize(cfg, run.model, run.method, state, interrupted=True))
            raise
        writer.summary(summary)
        return summary


def _checked(cfg: RunConfig) -> RunConfig:
    """``cfg`` resolved and validated; a finished run in its folder refused before anything is loaded."""
    cfg = cfg.resolved()
    cfg.validate()
    if records.is_finished(cfg.resolved_out()) and not cfg.overwrite:
        prepare_out(cfg)  # raises
    return cfg


@dataclass
class Built:
    """Everything one run trains with, built from its config (:func:`build`)."""

    data: Data
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: DataLoader
    test_loader: DataLoader
    device: torch.device


def build(cfg: RunConfig) -> Built:
    """Data, model (prepared by the method), optimizer, loaders and lr schedule of a resolved config.

    Seeds torch with ``cfg.seed`` first and sets the thread count, so the initialization and the data
    order are those of the seed. Nothing is written.
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = cfg.torch_device()
    torch.manual_seed(cfg.seed)
    data = get_dataset(cfg.dataset, root=cfg.data_root)
    method = cfg.build_method()
    try:
        model = get_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels).to(device)
    except ValueError as e:
        raise ConfigError(f"model {cfg.model}: {e}", settings=("model",)) from None
    model = method.prepare(model)
    opt_cfg = OptimizerConfig(name=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)  # fmt: skip
    optimizer = method.make_optimizer(model, opt_cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    train_loader = _loader(
        data.train, cfg.batch_size, True, g, drop_last=len(data.train) >= 2 * cfg.batch_size
    )
    test_loader = _loader(data.test, max(cfg.batch_size, 500), False, None, drop_last=False)
    steps_per_epoch = len(train_loader)
    factor = _lr_factor(cfg, steps_per_epoch, steps_per_epoch * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return Built(data, model, method, optimizer, scheduler, train_loader, test_loader, device)


def _config_record(cfg: RunConfig, run: Built, out: Path) -> dict:
    """``config.json``: every setting, resolved, and what this machine made of it."""
    config = asdict(cfg)
    config.update(
        out=str(out),
        method_config=run.method.config(),
        strength=run.method.strength,
        num_params=sum(p.numel() for p in run.model.parameters()),
        torch_version=torch.__version__,
        threads_used=torch.get_num_threads(),
        device_used=str(run.device),
    )
    return config


@dataclass
class FitState:
    """Where :func:`fit` stands; updated in place as it trains, so a caller interrupted mid-fit still has
    it. ``diverged_step`` is the step whose loss was not finite (None while the loss is finite)."""

    step: int = 0
    epochs_done: int = 0
    train_time_s: float = 0.0
    regularizer_time_s: float = 0.0
    last_eval: dict[str, float] = field(default_factory=dict)
    diverged_step: int | None = None


def fit(
    model: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable,
    *,
    epochs: int,
    test_loader: Iterable | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    device: torch.device | str | None = None,
    drift_every: int = 20,
    eval_every: int = 1,
    writer: records.RunWriter | None = None,
    progress: bool = False,
    state: FitState | None = None,
) -> FitState:
    """The training loop of the method interface, on any model, optimizer and data.

    ``model`` must already be prepared by ``method`` (``method.prepare(model)``) and ``optimizer`` built
    for it (``method.make_optimizer``). Every step is :func:`oblique.methods.base.training_step` on the
    cross-entropy of a batch; the scheduler (if any) steps once per batch. With a ``writer``, the records
    of ``metrics.jsonl`` are written as the run goes (schema in :mod:`oblique.records`); without one,
    nothing is written. Stops at the first non-finite loss (``state.diverged_step``).

    Args:
        train_loader, test_loader: iterables of ``(x, y)`` batches; no test loader: no evaluation.
        device: where batches are moved; default: the model's parameters' device.
        drift_every: record drift every N steps (and before the first and after the last).
        eval_every: test error every N epochs (and after the last).
        state: a :class:`FitState` to update in place (default: a new one).

    Returns:
        The :class:`FitState` after the last step.
    """
    state = state or FitState()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * epochs
    t0 = time.perf_counter()
    bar = _progress_bar(progress, total, method.name)
    try:
        d0 = model_drift(model, weights=method.effective_weights(model))
        if writer is not None:
            writer.meta(steps_per_epoch=steps_per_epoch, total_steps=total, targets=method.targets,
                        layers=list(d0["layers"]))  # fmt: skip
            writer.drift(0, 0.0, d0)
        model.train()
        for epoch in range(epochs):
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                state.step += 1
                loss = F.cross_entropy(model(x), y)
                if not torch.isfinite(loss):
                    state.diverged_step = state.step
                    if writer is not None:
                        writer.diverged(state.step, loss.item())
                    break
                _one_step(model, method, optimizer, scheduler, loss, state, writer, steps_per_epoch)
                if writer is not None and (state.step % drift_every == 0 or state.step == total):
                    drift = model_drift(model, weights=method.effective_weights(model))
                    writer.drift(state.step, state.step / steps_per_epoch, drift)
                if bar is not None:
                    bar.update(1)
                    err = state.last_eval.get("test_error", float("nan"))
                    bar.set_postfix(loss=f"{loss.item():.3f}", err=f"{err:.1f}%")
            if state.diverged_step is not None:
                break
            state.epochs_done = epoch + 1
            if test_loader is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                state.last_eval = evaluate(model, test_loader, device)
                if writer is not None:
                    writer.eval(state.step, float(epoch + 1), state.last_eval)
        return state
    finally:
        state.train_time_s += time.perf_counter() - t0
        if bar is not None:
            bar.close()


def _one_step(model, method, optimizer, scheduler, loss, state: FitState, writer, steps_per_epoch) -> None:
    """One training step after the forward pass: the interface's step, the schedule, the step record."""
    lr = optimizer.param_groups[0]["lr"]  # the lr this step uses
    marks = training_step(method, model, optimizer, loss, state.step)
    state.regularizer_time_s += (marks.regularizer_done - marks.backward_done) + (
        marks.after_step_done - marks.step_done
    )
    if scheduler is not None:
        scheduler.step()
    if writer is not None:
        reg = getattr(method, "last_value", None)
        if reg is None and marks.penalty is not None:
            reg = marks.penalty.item() / method.strength if method.strength else None
        writer.step(state.step, state.step / steps_per_epoch, loss=loss.item(), lr=lr, reg=reg)


def _progress_bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)


def summarize(cfg: RunConfig, model: nn.Module, method: Method, state: FitState, *, interrupted: bool = False
              ) -> dict:  # fmt: skip
    """``summary.json`` of a run: its identity, status, test error, times and final drift."""
    summary: dict[str, Any] = {
        "status": "interrupted",
        "method": method.name,
        "strength": method.strength,
        "targets": method.targets,
        "hyperparameters": dict(method.hp),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
    }
    times = dict(
        steps=state.step, train_time_s=state.train_time_s, regularizer_time_s=state.regularizer_time_s
    )
    if interrupted:
        return {**summary, **times}
    if state.diverged_step is not None:
        nan = float("nan")
        summary.update(
            status="diverged", diverged_step=state.diverged_step, test_error=nan, test_error_top5=nan
        )
    else:
        summary.update(
            status="ok", **{k: state.last_eval[k] for k in ("test_error", "test_error_top5", "test_loss")}
        )
    summary.update(times, drift=model_drift(model, weights=method.effective_weights(model)))
    return summary


def remove_run(path: str | os.PathLike) -> None:
    """Delete a run directory (used by the study runner to rerun an unfinished run from the start)."""
    shutil.rmtree(path, ignore_errors=True)
