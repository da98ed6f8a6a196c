"""One training run, end to end: data, model, method, optimizer, schedule, records, checkpoints.

:func:`train` takes a :class:`RunConfig`, writes a run directory (see :mod:`oblique.records`) and returns
the summary; :func:`resume` continues a killed or interrupted one from its last checkpoint. The step is the
method interface's (``oblique.methods.base``)::

    loss = CE(model(x), y)          # the target loss
    pen  = method.penalty(model)    # soft methods; its backward is run separately, so it can be timed
    method.before_step(model)       # closed-form gradients (Norm Loss, fused)
    optimizer.step(); method.after_step(model, step)   # projections

``regularizer_time_s`` is the wall time of the penalty, its backward, ``before_step`` and ``after_step``.
The cost of a reparametrization (wn, oni, olm) lives inside the model's forward and backward and is not
separable inside a training run: ``oblique bench`` isolates it.

Determinism: with the same config and seed on the CPU, two runs give identical records (the data order,
the initialization and every random op are seeded; the number of threads is part of the config).

Note [exact resume]: a checkpoint (``checkpoint.pt``, every ``checkpoint_every`` epochs and whenever the
run is stopped by SIGINT or SIGTERM) holds the model, the optimizer, the schedule, every random state
(torch CPU and CUDA, numpy, Python, the data-order generator, see :mod:`oblique.batches`), the step, the
method's own state (``Method.state_dict``) and the position reached in ``metrics.jsonl``. A signal is
acted on *between* steps (and between evaluation batches): the checkpoint is always of a whole step, and a
resumed run takes exactly the steps, and writes exactly the records, of an uninterrupted one on the CPU. A
second signal stops at once (the last periodic checkpoint stays). A finished run's checkpoint is removed:
``model.pt`` holds its weights.

Replacing a finished run (``overwrite``) trains in ``OUT.new`` beside it and swaps it in only when the new
run is over: an interrupted or failed replacement leaves the finished run as it was.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from oblique import records
from oblique.batches import Batches
from oblique.config import SCHEDULES, ConfigError, RunConfig, resolve_device, run_config_from
from oblique.data import Data, TensorData, get_dataset
from oblique.geometry import model_drift
from oblique.methods import Method, OptimizerConfig
from oblique.methods.base import training_step
from oblique.models import get_model
from oblique.progress import progress as _progress

__all__ = [
    "SCHEDULES",
    "Built",
    "ConfigError",
    "FitState",
    "RunConfig",
    "RunInterrupted",
    "StopOnSignal",
    "build",
    "evaluate",
    "fit",
    "resolve_device",
    "resume",
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
def evaluate(model: torch.nn.Module, loader, device: torch.device, stop: StopOnSignal | None = None
             ) -> dict[str, float]:  # fmt: skip
    """Top-1 and top-5 test error (%) and mean cross-entropy over ``loader``.

    Raises:
        RunInterrupted: ``stop`` was signalled (checked between batches).
    """
    was_training = model.training
    model.eval()
    n = wrong1 = wrong5 = 0
    loss = 0.0
    try:
        for x, y in loader:
            if stop is not None:
                stop.check()
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices  # (B, k)
            hit = topk == y.unsqueeze(1)
            wrong1 += (~hit[:, 0]).sum().item()
            wrong5 += (~hit.any(dim=1)).sum().item()
            n += len(y)
    finally:
        model.train(was_training)
    return {"test_error": 100.0 * wrong1 / n, "test_error_top5": 100.0 * wrong5 / n, "test_loss": loss / n}


def _test_loader(dataset, batch_size: int) -> DataLoader:
    if isinstance(dataset, TensorData):  # whole batches in one indexing op
        from torch.utils.data import BatchSampler

        sampler = BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False)
        return DataLoader(dataset, sampler=sampler, batch_size=None)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


# --------------------------------------------------------------------------- stopping on a signal
class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal at a step boundary, after writing its checkpoint; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_dir: Path | None = None  # where the checkpoint is, once written


class StopOnSignal:
    """While entered (in the main thread), the first SIGINT or SIGTERM only *asks* the run to stop: the
    training loop checks :meth:`check` between steps and stops there, with a checkpoint (Note [exact
    resume]). A second signal raises KeyboardInterrupt at once. Elsewhere than in the main thread (where
    Python cannot install handlers) it does nothing and Ctrl-C interrupts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    #: Whether a second signal stops at once. A study's worker processes set it to False: their stop
    #: requests come from the study process (and from the kernel when it dies) and may arrive twice.
    second_signal_stops: bool = True

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and self.second_signal_stops:
            raise KeyboardInterrupt  # the second signal: at once
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a stop was asked for."""
        if self.signum is not None:
            raise RunInterrupted(self.signum)


# --------------------------------------------------------------------------- one run, in named steps
def train(cfg: RunConfig) -> dict:
    """Run one training run as ``cfg`` says; write its run directory; return the summary dict.

    The steps: check the config, :func:`build` everything (before any folder is touched), take the run
    folder (locked; a finished run being replaced stays until the new one is over), write ``config.json``,
    :func:`fit` with checkpoints, :func:`summarize`.

    Raises:
        ConfigError: an invalid setting, a finished or resumable run in ``cfg.out`` (nothing is written).
        oblique.data.DataError: the data cannot be read.
        oblique.records.FolderLockedError: another process writes this run folder.
        KeyboardInterrupt: after writing ``summary.json`` with status ``"interrupted"`` (and, for a
            signal, a checkpoint: :class:`RunInterrupted`).
    """
    cfg = _checked(cfg)
    run = build(cfg)
    out = cfg.resolved_out()
    work = _work_dir(cfg)
    with records.FolderLock(work, "run folder"):
        prepare_out(cfg, work)
        with records.RunWriter(work) as writer:
            writer.config(_config_record(cfg, run, out))
            summary = _fit_and_record(cfg, run, writer, FitState())
    _swap_in(work, out)
    return summary


def resume(run_dir: str | os.PathLike, *, progress: bool | None = None) -> dict:
    """Continue the killed or interrupted run in ``run_dir`` from its last checkpoint, with the settings
    recorded in its ``config.json``; return the summary. The records end as an uninterrupted run's would.

    Args:
        progress: show progress (default: as recorded).

    Raises:
        ConfigError: ``run_dir`` holds no run, a finished run, or no checkpoint to resume from.
        oblique.records.RecordError: the checkpoint or the config cannot be read.
    """
    work = Path(run_dir)
    cfg = _recorded_config(work, progress)
    run = build(cfg)
    with records.FolderLock(work, "run folder"):
        if records.is_finished(work):
            raise ConfigError(f"{work} holds a finished run; there is nothing to resume")
        ckpt = records.read_checkpoint(work)
        state = _restore(ckpt, run)
        state.resumed_at.append(state.step)
        with records.RunWriter(work, resume_at=ckpt["metrics_offset"]) as writer:
            summary = _fit_and_record(cfg, run, writer, state)
    _swap_in(work, cfg.resolved_out())
    return summary


def _recorded_config(work: Path, progress: bool | None) -> RunConfig:
    if not (work / records.CONFIG).is_file():
        raise ConfigError(f"{work} holds no run ({records.CONFIG} missing); nothing to resume")
    if records.is_finished(work):
        raise ConfigError(f"{work} holds a finished run; there is nothing to resume")
    if not (work / records.CHECKPOINT).is_file():
        raise ConfigError(
            f"{work} has no checkpoint to resume from (the run stopped before its first one); "
            "start it again with --overwrite"
        )
    recorded = records.read_config(work)
    if not isinstance(recorded, dict):
        raise records.RecordError(
            f"{work / records.CONFIG}: expected a table of settings; got {recorded!r:.60}"
        )
    settings = {k: v for k, v in recorded.items() if k in RunConfig.field_names()}
    if progress is not None:
        settings["progress"] = progress
    cfg = run_config_from(settings, source=str(work / records.CONFIG)).resolved()
    cfg.validate()
    return cfg


def _fit_and_record(cfg: RunConfig, run: Built, writer: records.RunWriter, state: FitState) -> dict:
    """Fit (from ``state``), then write ``model.pt`` and ``summary.json`` and drop the checkpoint; on an
    interruption write the summary with status ``interrupted`` and re-raise."""
    with StopOnSignal() as stop:
        try:
            fit(run.model, run.method, run.optimizer, run.batches, epochs=cfg.epochs,
                test_loader=run.test_loader, scheduler=run.scheduler, device=run.device,
                drift_every=cfg.drift_every, eval_every=cfg.eval_every, writer=writer,
                progress=cfg.progress, state=state, checkpoint_every=cfg.checkpoint_every,
                stop=stop)  # fmt: skip
            summary = summarize(cfg, run.model, run.method, state)
            if cfg.save_model:
                writer.model(run.model.state_dict())
        except KeyboardInterrupt as e:
            # also when Ctrl-C lands after the run finished but before its records were all written
            writer.summary(summarize(cfg, run.model, run.method, state, interrupted=True))
            if isinstance(e, RunInterrupted) and (writer.root / records.CHECKPOINT).is_file():
                e.run_dir = writer.root
            raise
        writer.summary(summary)
        writer.drop_checkpoint()
    return summary


def _checked(cfg: RunConfig) -> RunConfig:
    """``cfg`` resolved and validated; a run in its folder that must not be replaced refused before
    anything is loaded."""
    cfg = cfg.resolved()
    cfg.validate()
    _refuse_existing(cfg, cfg.resolved_out())
    return cfg


def _refuse_existing(cfg: RunConfig, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} exists and is not a folder; choose another --out", settings=("out",))
    if cfg.overwrite:
        return
    if records.is_finished(out):
        raise ConfigError(
            f"{out} already holds a finished run; pass --overwrite to replace it, or choose another --out"
        )
    if (out / records.CHECKPOINT).exists():
        raise ConfigError(
            f"{out} holds an interrupted run with a checkpoint; continue it with 'oblique run --resume {out}', "
            "or pass --overwrite to start it over"
        )


def _work_dir(cfg: RunConfig) -> Path:
    """Where the run writes: its folder, or ``OUT.new`` beside a finished run it replaces."""
    out = cfg.resolved_out()
    return _replacement(out) if cfg.overwrite and records.is_finished(out) else out


def _replacement(out: Path) -> Path:
    return out.with_name(out.name + ".new")


def prepare_out(cfg: RunConfig, work: Path | None = None) -> Path:
    """Check the run folder (refusing a finished or resumable run unless ``cfg.overwrite``) and empty
    ``work`` (default: the run folder) of a previous run's records."""
    out = cfg.resolved_out()
    work = work or out
    _refuse_existing(cfg, out)
    work.mkdir(parents=True, exist_ok=True)
    for name in (records.CONFIG, records.METRICS, records.SUMMARY, records.MODEL, records.CHECKPOINT):
        (work / name).unlink(missing_ok=True)
    return work


def _swap_in(work: Path, out: Path) -> None:
    """Put the finished replacement ``work`` (``OUT.new``) in place of ``out``; nothing when they are
    the same folder or the replacement is not over."""
    if work.resolve() != _replacement(out).resolve() or not records.is_finished(work):
        return
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class Built:
    """Everything one run trains with, built from its config (:func:`build`)."""

    data: Data
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Batches
    test_loader: DataLoader
    device: torch.device


def build(cfg: RunConfig) -> Built:
    """Data, model (prepared by the method), optimizer, training order and lr schedule of a resolved
    config. Seeds torch with ``cfg.seed`` first and sets the thread count, so the initialization and the
    data order are those of the seed. Nothing is written.
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
    batches = Batches(
        data.train, cfg.batch_size, generator=g, drop_last=len(data.train) >= 2 * cfg.batch_size
    )
    test_loader = _test_loader(data.test, max(cfg.batch_size, 500))
    factor = _lr_factor(cfg, len(batches), len(batches) * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return Built(data, model, method, optimizer, scheduler, batches, test_loader, device)


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


# --------------------------------------------------------------------------- the training loop
@dataclass
class FitState:
    """Where :func:`fit` stands; updated in place as it trains, so a caller interrupted mid-fit still has
    it. ``epochs_done`` counts epochs whose end (evaluation, checkpoint) is done; ``diverged_step`` is the
    step whose loss was not finite (None while the loss is finite)."""

    step: int = 0
    epochs_done: int = 0
    train_time_s: float = 0.0
    regularizer_time_s: float = 0.0
    last_eval: dict[str, float] = field(default_factory=dict)
    diverged_step: int | None = None
    resumed_at: list[int] = field(default_factory=list)  # the steps a resumed run continued from


def fit(
    model: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    batches: Batches | Iterable,
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
    checkpoint_every: int = 0,
    stop: StopOnSignal | None = None,
) -> FitState:
    """The training loop of the method interface, on any model, optimizer and data.

    ``model`` must already be prepared by ``method`` (``method.prepare(model)``) and ``optimizer`` built
    for it (``method.make_optimizer``). Every step is :func:`oblique.methods.base.training_step` on the
    cross-entropy of a batch; the scheduler (if any) steps once per batch. With a ``writer``, the records
    of ``metrics.jsonl`` are written as the run goes (schema in :mod:`oblique.records`); without one,
    nothing is written. Stops at the first non-finite loss (``state.diverged_step``).

    Args:
        batches: a :class:`oblique.batches.Batches` (resumable), or any re-iterable of ``(x, y)``
            batches (e.g. a ``DataLoader``), iterated once per epoch.
        test_loader: batches of the test set; none: no evaluation.
        device: where batches are moved; default: the model's parameters' device.
        drift_every: record drift every N steps (and before the first and after the last).
        eval_every: test error every N epochs (and after the last).
        state: a :class:`FitState` to update in place; one with ``step > 0`` (from :func:`resume`)
            continues where it stands.
        checkpoint_every: with a ``writer`` and :class:`Batches`, a checkpoint every N epochs (0: none
            but the one written when ``stop`` is signalled).
        stop: a :class:`StopOnSignal`, checked between steps (Note [exact resume]).

    Returns:
        The :class:`FitState` after the last step.

    Raises:
        RunInterrupted: ``stop`` was signalled; the checkpoint is written (with a writer and Batches).
    """
    state = state or FitState()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    loop = _Loop(model, method, optimizer, batches, scheduler, writer, state, len(batches))
    total = loop.steps_per_epoch * epochs
    t0 = time.perf_counter()
    bar = _progress(total, method.name, "step", enabled=progress, initial=state.step)
    try:
        if state.step == 0 and writer is not None:
            d0 = model_drift(model, weights=method.effective_weights(model))
            writer.meta(steps_per_epoch=loop.steps_per_epoch, total_steps=total, targets=method.targets,
                        layers=list(d0["layers"]))  # fmt: skip
            writer.drift(0, 0.0, d0)
        model.train()
        while state.epochs_done < epochs and state.diverged_step is None:
            epoch = state.epochs_done
            for x, y in loop.epoch_batches(epoch):
                loop.step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                if state.diverged_step is not None:
                    break
                if writer is not None and (state.step % drift_every == 0 or state.step == total):
                    drift = model_drift(model, weights=method.effective_weights(model))
                    writer.drift(state.step, state.step / loop.steps_per_epoch, drift)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loop.last_loss:.3f}",
                    err=f"{state.last_eval.get('test_error', float('nan')):.1f}%",
                )
                loop.stop_here(stop)
            if state.diverged_step is not None:
                break
            if test_loader is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                try:
                    state.last_eval = evaluate(model, test_loader, device, stop)
                except RunInterrupted:
                    loop.checkpoint()
                    raise
                if writer is not None:
                    writer.eval(state.step, float(epoch + 1), state.last_eval)
            state.epochs_done = epoch + 1
            if checkpoint_every and state.epochs_done % checkpoint_every == 0 and state.epochs_done < epochs:
                loop.checkpoint()
            loop.stop_here(stop)
        return state
    finally:
        state.train_time_s += time.perf_counter() - t0
        bar.close()


class _Loop:
    """What :func:`fit` steps and checkpoints: the pieces of one training loop, and its state."""

    def __init__(self, model, method, optimizer, batches, scheduler, writer, state: FitState, steps: int):
        self.model, self.method, self.optimizer, self.batches = model, method, optimizer, batches
        self.scheduler, self.writer, self.state, self.steps_per_epoch = scheduler, writer, state, steps
        self.last_loss = float("nan")

    def epoch_batches(self, epoch: int) -> Iterable:
        skip = self.state.step - epoch * self.steps_per_epoch  # steps of this epoch already taken
        if isinstance(self.batches, Batches):
            return self.batches.epoch(epoch, skip)
        if skip:
            raise ValueError("fit can resume inside an epoch only with oblique.batches.Batches")
        return self.batches

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step on a batch: the loss, the interface's step, the schedule, the step record."""
        state = self.state
        state.step += 1
        loss = F.cross_entropy(self.model(x), y)
        if not torch.isfinite(loss):
            state.diverged_step = state.step
            if self.writer is not None:
                self.writer.diverged(state.step, loss.item())
            return
        lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses
        marks = training_step(self.method, self.model, self.optimizer, loss, state.step)
        state.regularizer_time_s += (marks.regularizer_done - marks.backward_done) + (
            marks.after_step_done - marks.step_done
        )
        if self.scheduler is not None:
            self.scheduler.step()
        self.last_loss = loss.item()
        if self.writer is not None:
            reg = getattr(self.method, "last_value", None)
            if reg is None and marks.penalty is not None:
                reg = marks.penalty.item() / self.method.strength if self.method.strength else None
            epoch = state.step / self.steps_per_epoch
            self.writer.step(state.step, epoch, loss=self.last_loss, lr=lr, reg=reg)

    def checkpoint(self) -> None:
        """Write the checkpoint of the loop as it stands (with a writer and resumable batches)."""
        if self.writer is not None and isinstance(self.batches, Batches):
            self.writer.checkpoint(_checkpoint_state(self))

    def stop_here(self, stop: StopOnSignal | None) -> None:
        """If a stop was asked for: checkpoint, then raise :class:`RunInterrupted`."""
        if stop is not None and stop.requested:
            self.checkpoint()
            stop.check()


# --------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = 1


def _checkpoint_state(loop: _Loop) -> dict:
    """Everything an exact resume needs (Note [exact resume]): tensors and plain containers only."""
    return {
        "format": CHECKPOINT_FORMAT,
        "fit_state": asdict(loop.state),
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
        "method": loop.method.state_dict(),
        "data_order": loop.batches.state_dict(),
        "rng": _rng_state(),
    }


def _restore(ckpt: dict, run: Built) -> FitState:
    """Load a checkpoint into the pieces of a freshly built run; return the :class:`FitState` it holds."""
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise records.RecordError(f"checkpoint format {ckpt.get('format')!r} is not one this oblique reads")
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scheduler"] is not None:
            run.scheduler.load_state_dict(ckpt["scheduler"])
        run.method.load_state_dict(ckpt["method"])
        run.batches.load_state_dict(ckpt["data_order"])
        _set_rng_state(ckpt["rng"])
        return FitState(**ckpt["fit_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise records.RecordError(
            f"the checkpoint does not fit this run ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        ) from None


def _rng_state() -> dict:
    """Every random state a run draws from, as tensors and plain values."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the global state others draw from
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },  # fmt: skip
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    legacy = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    np.random.set_state(legacy)  # noqa: NPY002 - the global state others draw from
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


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
    if state.resumed_at:
        times["resumed_at"] = list(state.resumed_at)
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
