"""The training loop of the method interface (:func:`fit`), on any model, optimizer and data.

Used by :func:`oblique.train.train` for a run and usable alone from a notebook. One step::

    loss = CE(model(x), y)          # under autocast for bf16; the parametrizations computed in fp32 first
    oblique.methods.base.training_step(method, model, optimizer, loss, step)   # penalty, hooks, step
    scheduler.step()

Note [sync-free step]: nothing in a step waits for the device. The loss, the regularizer's value and the
drift of every layer stay device tensors, buffered, and are written to ``metrics.jsonl`` in *one*
transfer every ``log_every`` steps (and before an evaluation, a checkpoint, a stop, the end). A
non-finite loss is found there and reported with its exact step: the records stop at that step (with
``log_every > 1`` the steps after it, up to the flush, were taken but are not recorded; with
``log_every = 1`` the diverged step is checked before its update). The regularizer's own time is measured
with CUDA events on a GPU, read at flush points (:mod:`oblique.clock`).
The values written do not depend on ``log_every``. The one exception: with ``precision="fp16"`` (CUDA),
``torch.amp.GradScaler.step`` reads its inf check on the host every step (torch's own code), so an fp16
step waits for the device once.

Note [exact resume]: a checkpoint holds the model, the optimizer, the schedule, every random state (torch
CPU and CUDA, numpy, Python, the data order and augmentation, see :mod:`oblique.batches`), the step, the
method's own state (``Method.state_dict``) and the position reached in ``metrics.jsonl``. A signal is acted
on *between* steps (and between evaluation batches) through :class:`StopOnSignal`: the checkpoint is
always of a whole step, and a resumed run takes exactly the steps, and writes exactly the records, of an
uninterrupted one on the CPU. A second signal stops at once (the last periodic checkpoint stays).
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from oblique import records, storage
from oblique.batches import Batches
from oblique.clock import Clock
from oblique.data import TensorData
from oblique.distributed import Dist
from oblique.geometry import drift_record, model_drift_tensor
from oblique.methods import Method
from oblique.methods.base import training_step
from oblique.progress import progress as _progress

__all__ = [
    "CHECKPOINT_FORMAT",
    "FitState",
    "RunInterrupted",
    "StopOnSignal",
    "checkpoint_state",
    "evaluate",
    "fit",
    "restore_checkpoint",
    "test_batches",
]


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, device: torch.device | str, stop: StopOnSignal | None = None
) -> dict[str, float]:
    """Top-1 and top-5 test error (%) and mean cross-entropy over ``loader``, read in one transfer at the
    end; every reparametrized weight computed once for the whole pass (``parametrize.cached``).

    Raises:
        RunInterrupted: ``stop`` was signalled (checked between batches).
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros(2, dtype=torch.int64, device=device)  # top-1, top-5
    n = 0
    try:
        with parametrize.cached():
            for x, y in loader:
                if stop is not None:
                    stop.check()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(_layout(x, model))
                loss += F.cross_entropy(logits, y, reduction="sum").double()
                topk = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, k)
                hit = topk == y.unsqueeze(1)
                wrong += torch.stack([(~hit[:, 0]).sum(), (~hit.any(dim=1)).sum()])
                n += len(y)
    finally:
        model.train(was_training)
    total, (w1, w5) = loss.item(), wrong.tolist()
    return {"test_error": 100.0 * w1 / n, "test_error_top5": 100.0 * w5 / n, "test_loss": total / n}


class test_batches:  # noqa: N801 - a re-iterable, used like a loader
    """The test set in order, ``batch_size`` at a time: slices of an in-memory set (on its device), or a
    ``DataLoader`` for a set read from disk."""

    def __init__(self, dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.batch_size = dataset, batch_size
        self._loader = None
        if not isinstance(dataset, TensorData):
            from torch.utils.data import DataLoader

            self._loader = DataLoader(
                dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory
            )

    def __iter__(self):
        if self._loader is not None:
            return iter(self._loader)
        n, bs = len(self.dataset), self.batch_size
        return (self.dataset[slice(i, min(i + bs, n))] for i in range(0, n, bs))

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)


def _layout(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` in the model's memory format (channels-last when its 4-D weights are)."""
    if x.dim() == 4 and getattr(model, "_oblique_channels_last", False):
        return x.contiguous(memory_format=torch.channels_last)
    return x


# --------------------------------------------------------------------------- stopping on a signal
class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal at a step boundary, after writing its checkpoint; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_dir: Path | None = None  # where the checkpoint is, once written
        self.resume: str | None = None  # the command that continues the run (oblique.train.resume_command)
        self.rank = 0  # under torchrun: the rank it stopped (rank 0 reports)


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


# --------------------------------------------------------------------------- the loop
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
    grad_scaler: dict[str, Any] | None = None  # fp16: the GradScaler's state (its scale), for an exact resume


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
    log_every: int = 50,
    precision: str = "fp32",
    writer: records.RunWriter | None = None,
    progress: bool = False,
    state: FitState | None = None,
    checkpoint_every: int = 0,
    stop: StopOnSignal | None = None,
    forward: nn.Module | None = None,
    dist: Dist | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> FitState:
    """The training loop of the method interface, on any model, optimizer and data.

    ``model`` must already be prepared by ``method`` (``method.prepare(model)``) and ``optimizer`` built
    for it (``method.make_optimizer``). Every step is :func:`oblique.methods.base.training_step` on the
    cross-entropy of a batch; the scheduler (if any) steps once per batch. With a ``writer``, the records
    of ``metrics.jsonl`` are written as the run goes (schema in :mod:`oblique.records`); without one,
    nothing is written. Stops at the first non-finite loss (``state.diverged_step``; Note [sync-free
    step]).

    Args:
        batches: a :class:`oblique.batches.Batches` (resumable), or any re-iterable of ``(x, y)``
            batches (e.g. a ``DataLoader``), iterated once per epoch.
        test_loader: batches of the test set; none: no evaluation.
        device: where batches are moved; default: the model's parameters' device.
        drift_every: record drift every N steps (and before the first and after the last).
        eval_every: test error every N epochs (and after the last).
        log_every: flush the buffered records every N steps, in one transfer (Note [sync-free step]).
        precision: ``"fp32"``, ``"bf16"``, or ``"fp16"`` on CUDA with a GradScaler (:data:`FP16_DEVICES`):
            autocast around the forward pass and the loss, every parametrized weight computed in float32 first.
        state: a :class:`FitState` to update in place; one with ``step > 0`` (a resumed run) continues
            where it stands.
        checkpoint_every: with a ``writer`` and :class:`Batches`, a checkpoint every N epochs (0: none
            but the one written when ``stop`` is signalled).
        stop: a :class:`StopOnSignal`, checked between steps (Note [exact resume]).
        forward: the module the forward pass goes through (a ``DistributedDataParallel`` wrapping
            ``model``); default ``model``. Everything else acts on ``model`` itself.
        dist: the ranks of a run on several processes (:mod:`oblique.distributed`): the loss is averaged
            over them, divergence and stops are agreed at flush points, only the main rank writes,
            evaluates and shows progress.
        loss_fn: ``loss_fn(outputs, targets)`` → a scalar, for any task (language-model logits, a regression);
            default: cross-entropy. ``test_loader`` measures classification error: for the default loss only.

    Returns:
        The :class:`FitState` after the last step.

    Raises:
        RunInterrupted: ``stop`` was signalled; the checkpoint is written (with a writer and Batches).
    """
    state = state or FitState()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    _check_fit_arguments(precision, loss_fn, test_loader, device)
    loop = _Loop(
        model,
        method,
        optimizer,
        batches,
        scheduler,
        writer,
        state,
        device,
        log_every=log_every,
        precision=precision,
        forward=forward,
        dist=dist or Dist(),
        loss_fn=loss_fn,
    )
    return loop.run(epochs, test_loader, drift_every, eval_every, checkpoint_every, stop, progress=progress)


#: The devices :func:`fit` trains fp16 on: CUDA GPUs (the CPU has bf16). A ``torch.amp.GradScaler`` scales
#: the gradients (:func:`~oblique.methods.base.training_step`), its scale kept in the state and checkpoints.
FP16_DEVICES = ("cuda",)

#: precision -> the autocast dtype (None: no autocast).
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _check_fit_arguments(precision: str, loss_fn, test_loader, device: torch.device) -> None:
    """:func:`fit`'s arguments that cannot go together, refused in one line (``ValueError``)."""
    if precision not in _AUTOCAST:
        raise ValueError(f"precision must be one of {', '.join(_AUTOCAST)}; got {precision!r}")
    if precision == "fp16" and device.type not in FP16_DEVICES:
        raise ValueError(
            f"precision fp16 needs a CUDA GPU (fp16 with a GradScaler); on the {device.type} use bf16 (or fp32)"
        )
    if loss_fn is not None and test_loader is not None:
        raise ValueError(
            "test_loader measures classification error with the default loss: with your own loss_fn, leave it "
            "out and evaluate on your own"
        )


class _StepRecord(NamedTuple):
    """A step's record waiting in the buffer for the next flush (Note [sync-free step])."""

    step: int
    lr: float  #: the learning rate the step used (0.0 for a step not taken: its loss was not finite)
    loss: torch.Tensor  #: the batch's loss, on the device (0-d)
    reg: torch.Tensor | None  #: the regularizer's value on the device; None when there is none to record
    divide: bool  #: ``reg`` is the scaled penalty: divided by the strength when written
    strength: float  #: the λ the step used (a schedule's value at this step)


class _DriftRecord(NamedTuple):
    """A drift record waiting in the buffer: :func:`oblique.geometry.model_drift_tensor`'s layer names and
    table (device tensor), read at the next flush."""

    step: int
    names: list[str]
    table: torch.Tensor | None


class _Loop:
    """What :func:`fit` steps, records and checkpoints: the pieces of one training loop and its buffer
    of records waiting for the next flush (Note [sync-free step])."""

    def __init__(
        self,
        model,
        method,
        optimizer,
        batches,
        scheduler,
        writer,
        state: FitState,
        device: torch.device,
        *,
        log_every: int,
        precision: str,
        forward=None,
        dist: Dist,
        loss_fn=None,
    ):
        self.model, self.method, self.optimizer, self.batches = model, method, optimizer, batches
        self.forward = forward if forward is not None else model
        self.loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
        self.dist = dist
        self.scheduler, self.writer, self.state, self.device = scheduler, writer, state, device
        self.steps_per_epoch, self.log_every = len(batches), log_every
        method.at_step(state.step)  # a resumed run: a strength schedule goes on from its step
        self.autocast_dtype = _AUTOCAST[precision]
        self.autocast = self.autocast_dtype is not None
        # fp16: the gradients scaled (and unscaled before before_step), its scale carried in the state
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        if self.scaler is not None and state.grad_scaler is not None:
            self.scaler.load_state_dict(state.grad_scaler)
        # autocast: the layers whose parametrized weight is computed once per step outside it (fixed in a fit)
        self.cast_targets = method.target_modules(model) if self.autocast else []
        self.clock = Clock(device)
        self.pending: list[_StepRecord | _DriftRecord] = []  # in the order they are written
        self.spans: list[tuple] = []  # CUDA: the regularizer's event marks, read at the next flush
        self.bar: Any = None
        self.last_loss = float("nan")
        self.broken = False  # the weights went non-finite where a parametrization cannot compute them

    def run(
        self,
        epochs: int,
        test_loader,
        drift_every: int,
        eval_every: int,
        checkpoint_every: int,
        stop: StopOnSignal | None,
        *,
        progress: bool,
    ) -> FitState:
        """:func:`fit`'s epochs, from where :attr:`state` stands; its training time added to the state's."""
        state, total = self.state, self.steps_per_epoch * epochs
        t0 = time.perf_counter()
        self.bar = _progress(
            total, self.method.name, "step", enabled=progress and self.dist.main, initial=state.step
        )
        try:
            if state.step == 0 and self.writer is not None:
                self.start(total)
            self.model.train()
            while state.epochs_done < epochs and state.diverged_step is None:
                epoch = state.epochs_done
                if self.epoch(epoch, total, drift_every, stop):
                    break  # diverged
                self.end_of_epoch(epoch, epochs, test_loader, eval_every, checkpoint_every, stop)
            return state
        finally:
            state.train_time_s += time.perf_counter() - t0
            self.bar.close()

    # ---------------------------------------------------------------- stepping
    def start(self, total: int) -> None:
        """The first records: ``meta`` and the drift before training."""
        names, table = model_drift_tensor(self.model, weights=self.method.effective_filters(self.model))
        self.writer.meta(
            steps_per_epoch=self.steps_per_epoch, total_steps=total, targets=self.method.targets, layers=names
        )
        self.writer.drift(0, 0.0, drift_record((names, table)))

    def epoch_batches(self, epoch: int) -> Iterable:
        skip = self.state.step - epoch * self.steps_per_epoch  # steps of this epoch already taken
        if isinstance(self.batches, Batches):
            return self.batches.epoch(epoch, skip)
        if skip:
            raise ValueError("fit can resume inside an epoch only with oblique.batches.Batches")
        return self.batches

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step on a batch: the loss, the interface's step, the schedule; the step record buffered."""
        state = self.state
        state.step += 1
        x, y = _layout(x.to(self.device, non_blocking=True), self.model), y.to(self.device, non_blocking=True)
        try:
            loss = self._loss(x, y)
        except torch.linalg.LinAlgError:  # non-finite weights an eigendecomposition cannot take: diverged
            self.broken = True
            loss = torch.full((), float("nan"), device=self.device)
        if self.broken or (self.log_every == 1 and not self.dist.active and not torch.isfinite(loss)):
            self.pending.append(_StepRecord(state.step, 0.0, loss.detach(), None, False, 0.0))  # no update
            return
        lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses
        strength = self.method.strength  # and the λ (a schedule's, read before after_step moves it on)
        marks = training_step(
            self.method,
            self.model,
            self.optimizer,
            loss,
            state.step,
            clock=self.clock.mark,
            scaler=self.scaler,
        )
        self._regularizer_time(marks)
        if self.scheduler is not None:
            self.scheduler.step()
        reg, divide = self.method.regularizer_value(), False
        if reg is None and marks.penalty is not None and strength:
            reg, divide = marks.penalty.detach(), True
        self.pending.append(
            _StepRecord(state.step, lr, loss.detach(), None if reg is None else reg.clone(), divide, strength)
        )

    def epoch(self, epoch: int, total: int, drift_every: int, stop: StopOnSignal | None) -> bool:
        """The steps of ``epoch`` (from where the state stands), their records flushed every ``log_every``
        steps and at the end; True when the loss went non-finite."""
        state = self.state
        for x, y in self.epoch_batches(epoch):
            self.step(x, y)
            if state.step % drift_every == 0 or state.step == total:
                self.drift()
            if state.step % self.log_every == 0 or self.broken:
                if self.flush():
                    return True
                self.stop_here(stop)
            elif not self.dist.active:  # a single process may stop between any two steps
                self.stop_here(stop)
        return self.flush()

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.autocast:
            return self.loss_fn(self.forward(x), y)
        with parametrize.cached():  # every parametrized weight once, in float32, outside autocast
            for target in self.cast_targets:
                target.weight  # noqa: B018 - computes and caches it
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return self.loss_fn(self.forward(x), y)

    def _regularizer_time(self, marks) -> None:
        if self.clock.cuda:
            self.spans.append(marks)
        else:
            self.state.regularizer_time_s += marks.regularizer_ms(self.clock.ms) / 1e3

    def drift(self) -> None:
        """Buffer a drift record of every targeted layer (device tensors)."""
        if self.writer is not None and not self.broken:
            weights = self.method.effective_filters(self.model)
            self.pending.append(
                _DriftRecord(self.state.step, *model_drift_tensor(self.model, weights=weights))
            )

    # ---------------------------------------------------------------- flushing
    def flush(self) -> bool:
        """Read every buffered value in one transfer and write the records; True when a loss was not finite
        (then ``state.diverged_step`` is its step and nothing after it is written). Under several ranks the
        losses are averaged first (the global batch's loss; a non-finite one anywhere is seen everywhere)."""
        steps = [r for r in self.pending if isinstance(r, _StepRecord)]
        if not self.pending:
            return self.state.diverged_step is not None
        losses = [torch.stack([r.loss.reshape(()).to(torch.float64) for r in steps])] if steps else []
        if losses and self.dist.active:
            self.dist.mean_(losses[0])
        regs = [r.reg for r in steps if r.reg is not None]
        drifts = [r.table for r in self.pending if isinstance(r, _DriftRecord) and r.table is not None]
        parts = [t.reshape(-1).to(torch.float64) for t in (*losses, *regs, *drifts)]
        flat = torch.cat([p.to(parts[0].device) for p in parts]).tolist() if parts else []
        n_regs = len(regs)
        loss_values, reg_values = iter(flat[: len(steps)]), iter(flat[len(steps) : len(steps) + n_regs])
        drift_values = iter(flat[len(steps) + n_regs :])
        flushed = 0
        for record in self.pending:
            if isinstance(record, _StepRecord):
                flushed += 1
                if not self._write_step(record, next(loss_values), reg_values):
                    break
            else:
                step, names, table = record
                rows = [[next(drift_values) for _ in range(4)] for _ in names] if table is not None else []
                if self.writer is not None:
                    self.writer.drift(step, step / self.steps_per_epoch, drift_record((names, table), rows))
        self.pending.clear()
        self._read_spans()
        self.bar.update(flushed)
        self.bar.set_postfix(
            loss=f"{self.last_loss:.3f}", err=f"{self.state.last_eval.get('test_error', float('nan')):.1f}%"
        )
        return self.state.diverged_step is not None

    def _write_step(self, record: _StepRecord, loss: float, values) -> bool:
        step, lr, divide = record.step, record.lr, record.divide
        reg = next(values) if record.reg is not None else None
        if not math.isfinite(loss):
            self.state.diverged_step = self.state.step = step
            if self.writer is not None:
                self.writer.diverged(step, loss)
            return False
        if divide:
            reg = reg / record.strength
        self.last_loss = loss
        if self.writer is not None:
            strength = record.strength if self.method.scheduled else None  # constant λ: in config.json
            self.writer.step(step, step / self.steps_per_epoch, loss=loss, lr=lr, reg=reg, strength=strength)
        return True

    def _read_spans(self) -> None:
        for m in self.spans:  # the events are done: the host just waited for the device
            self.state.regularizer_time_s += m.regularizer_ms(self.clock.ms) / 1e3
        self.spans.clear()

    # ---------------------------------------------------------------- epochs, checkpoints, stops
    def end_of_epoch(
        self,
        epoch: int,
        epochs: int,
        test_loader,
        eval_every: int,
        checkpoint_every: int,
        stop: StopOnSignal | None,
    ) -> None:
        state = self.state
        due = (epoch + 1) % eval_every == 0 or epoch + 1 == epochs
        if test_loader is not None and due and self.dist.main:  # the other ranks go on (and wait in DDP)
            try:
                own_stop = None if self.dist.active else stop  # several ranks agree on stops at flush points
                state.last_eval = evaluate(self.model, test_loader, self.device, own_stop)
            except RunInterrupted:
                self.checkpoint()
                raise
            if self.writer is not None:
                self.writer.eval(state.step, float(epoch + 1), state.last_eval)
        state.epochs_done = epoch + 1
        if checkpoint_every and state.epochs_done % checkpoint_every == 0 and state.epochs_done < epochs:
            self.checkpoint()
        self.stop_here(stop)

    def checkpoint(self) -> None:
        """Write the checkpoint of the loop as it stands (with a writer and resumable batches). Under
        several ranks every rank calls it (their random states are gathered); the main rank writes."""
        if not isinstance(self.batches, Batches) or (self.writer is None and not self.dist.active):
            return
        self.flush()
        rng = self.dist.gather(_rng_state())
        if self.scaler is not None:  # its scale (reading it waits for the device: here only)
            self.state.grad_scaler = self.scaler.state_dict()
        if self.writer is not None:
            self.writer.checkpoint(
                checkpoint_state(
                    self.model, self.method, self.optimizer, self.scheduler, self.batches, self.state, rng
                )
            )

    def stop_here(self, stop: StopOnSignal | None) -> None:
        """If a stop was asked for (on any rank): flush, checkpoint, then raise :class:`RunInterrupted`."""
        if stop is not None and self.dist.any(stop.requested):
            self.flush()
            self.checkpoint()
            raise RunInterrupted(stop.signum or signal.SIGTERM)


# --------------------------------------------------------------------------- checkpoints
#: The layout of the state in a checkpoint; 2: with the run's identity and digest (Note [checkpoint
#: identity] in :mod:`oblique.records`).
CHECKPOINT_FORMAT = 2


def checkpoint_state(
    model, method, optimizer, scheduler, batches: Batches, state: FitState, rng: list[dict] | None = None
) -> dict:
    """Everything an exact resume needs (Note [exact resume]): tensors and plain containers only. ``rng``:
    every rank's random states (default: this process's). ``step``: the steps taken (the writer records it
    in the run's identity, Note [checkpoint identity] in :mod:`oblique.records`)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "step": state.step,
        "fit_state": asdict(state),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "method": method.state_dict(),
        "data_order": batches.state_dict(),
        "rng": rng if rng is not None else [_rng_state()],
    }


def restore_checkpoint(
    ckpt: dict, model, method, optimizer, scheduler, batches: Batches, rank: int = 0
) -> FitState:
    """Load a checkpoint into the pieces of a freshly built run; return the :class:`FitState` it holds.

    Raises:
        oblique.storage.RecordError: the checkpoint is of another format or does not fit the pieces.
    """
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise storage.RecordError(f"checkpoint format {ckpt.get('format')!r} is not one this oblique reads")
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scheduler"] is not None and scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        method.load_state_dict(ckpt["method"])
        batches.load_state_dict(ckpt["data_order"])
        _set_rng_state(ckpt["rng"][rank])
        return FitState(**ckpt["fit_state"])
    except (LookupError, TypeError, ValueError, RuntimeError, AttributeError, ArithmeticError) as e:
        # untrusted contents: a missing key or index, a wrong type, a number out of range (a negative
        # value in Python's random state is an OverflowError), a tensor of the wrong shape
        raise storage.RecordError(
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
        },
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
