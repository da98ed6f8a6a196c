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

Checkpoints and exact resume: Note [exact resume] in :mod:`oblique.fit`. A finished run's checkpoint is
removed: ``model.pt`` holds its weights.

Replacing a finished run (``overwrite``) trains in ``OUT.new`` beside it and swaps it in only when the new
run is over: an interrupted or failed replacement leaves the finished run as it was.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oblique import records, storage
from oblique.batches import Batches
from oblique.config import ConfigError, RunConfig, environment, run_config_from
from oblique.data import Data, TensorData, get_dataset
from oblique.distributed import Dist, from_env, is_peer_failure
from oblique.errors import ObliqueError
from oblique.fit import (
    FitState,
    RunInterrupted,
    StopOnSignal,
    checkpoint_state,
    fit,
    restore_checkpoint,
    test_batches,
)
from oblique.geometry import drift_record, model_drift
from oblique.methods import Method
from oblique.models import get_model

__all__ = [
    "RESUME_OVERRIDES",
    "Built",
    "ModelNotSaved",
    "RankLost",
    "build",
    "prepare_out",
    "remove_run",
    "resume",
    "resume_command",
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


# --------------------------------------------------------------------------- one run, in named steps
def train(cfg: RunConfig) -> dict:
    """Run one training run as ``cfg`` says; write its run directory; return the summary dict.

    The steps: check the config, :func:`build` everything (before any folder is touched), take the run
    folder (locked; a finished run being replaced stays until the new one is over), write ``config.json``,
    :func:`fit` with checkpoints, :func:`summarize`. Under ``torchrun`` every rank trains its share and
    only rank 0 writes (:mod:`oblique.distributed`); the others return ``{"status": ..., "rank": r}``.

    Raises:
        ConfigError: an invalid setting, a finished or resumable run in ``cfg.out`` (nothing is written).
        oblique.data.DataError: the data cannot be read.
        oblique.storage.FolderLockedError: another process writes this run folder.
        KeyboardInterrupt: after writing ``summary.json`` with status ``"interrupted"`` (and, for a
            signal, a checkpoint: :class:`RunInterrupted`).
    """
    dist = from_env(cfg.device)
    cfg = _checked(cfg)
    run = build(cfg, dist)
    out, work = cfg.resolved_out(), _work_dir(cfg)
    record = _config_record(cfg, run, out, dist)
    recorded = run_config_from(_settings_in(record), source=str(work / records.CONFIG))
    with _main_rank_writes(dist, work, _identity(recorded)) as writer:
        if writer is not None:
            prepare_out(cfg, work)
            writer.open()
            writer.config(record)
        summary = _fit_and_record(cfg, run, writer, FitState(), dist, work)
    if dist.main:
        _swap_in(work, out)
    return summary


#: the settings a resumed run may change: how it executes, not what it computes (declared by each RunConfig
#: field's :class:`oblique.config.Execution`)
RESUME_OVERRIDES = RunConfig.execution_settings(on_resume=True)


def resume(run_dir: str | os.PathLike, **execution: Any) -> dict:
    """Continue the killed or interrupted run in ``run_dir`` from its last checkpoint, with the settings
    recorded in its ``config.json``; return the summary. The records end as an uninterrupted run's would.

    The checkpoint must be the run's own (Note [checkpoint identity] in :mod:`oblique.records`): intact,
    of this run (its seed and settings those of ``config.json``) and taken after the records that
    ``metrics.jsonl`` holds; anything else is refused before a byte is written.

    Args:
        execution: any of :data:`RESUME_OVERRIDES` (``device``, ``log_every``, ``checkpoint_every``,
            ``progress``) to change how the run goes on; None or absent: as recorded.

    Raises:
        ConfigError: ``run_dir`` holds no run, a finished run, or no checkpoint to resume from.
        oblique.storage.RecordError: the checkpoint or the config cannot be read, or the checkpoint is not
            the run's own.
    """
    work = Path(run_dir)
    cfg = _recorded_config(work, execution)
    dist = from_env(cfg.device)
    run = build(cfg, dist)
    with _main_rank_writes(dist, work, _identity(cfg)) as writer:
        if writer is not None and records.is_finished(work):
            raise ConfigError(f"{work} holds a finished run; there is nothing to resume")
        ckpt = records.read_checkpoint(work)
        refusal = _refusal(work, ckpt, cfg)  # judged on the checkpoint as read: restoring hands it to the run
        state = restore_checkpoint(
            ckpt, run.model, run.method, run.optimizer, run.scheduler, run.batches, rank=dist.rank
        )
        if refusal is not None:  # (one that does not even fit this run's pieces said so above)
            raise refusal
        state.resumed_at.append(state.step)
        if writer is not None:
            records.remove_leftovers(work)
            writer.resume_at = ckpt["run"]["metrics_offset"]
            writer.open()
        summary = _fit_and_record(cfg, run, writer, state, dist, work)
    if dist.main:
        _swap_in(work, cfg.resolved_out())
    return summary


def _settings_in(recorded: dict) -> dict[str, Any]:
    """The run settings of a ``config.json`` record (it holds more: what the machine made of them)."""
    return {k: v for k, v in recorded.items() if k in RunConfig.field_names()}


def _identity(cfg: RunConfig) -> dict:
    """What identifies the run in its checkpoints (:class:`oblique.records.RunWriter`'s ``run``), from its
    settings as ``config.json`` records them (the method's own strength filled in, ...)."""
    return {"config": cfg.identity(), "seed": cfg.seed}


def _refusal(work: Path, ckpt: dict, cfg: RunConfig) -> storage.RecordError | None:
    """Why the checkpoint in ``work`` is not to be resumed from (:func:`oblique.records.check_checkpoint`),
    or None."""
    try:
        records.check_checkpoint(work, ckpt, _identity(cfg))
    except storage.RecordError as e:
        return e
    return None


@contextlib.contextmanager
def _main_rank_writes(dist: Dist, work: Path, run: dict):
    """On the main rank, the run folder locked and its :class:`~oblique.records.RunWriter` (opened by the
    caller once the folder is checked), recording ``run`` in its checkpoints; on the others, None."""
    if not dist.main:
        yield None
        return
    with storage.FolderLock(work, "run folder"), records.RunWriter(work, lazy=True, run=run) as w:
        yield w


def _recorded_config(work: Path, execution: dict[str, Any]) -> RunConfig:
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
        raise storage.RecordError(
            f"{work / records.CONFIG}: expected a table of settings; got {recorded!r:.60}"
        )
    settings = _settings_in(recorded)
    unknown = sorted(set(execution) - set(RESUME_OVERRIDES))
    if unknown:
        raise ConfigError(
            f"a resumed run keeps its settings; only {', '.join(RESUME_OVERRIDES)} may change, "
            f"not {', '.join(unknown)}"
        )
    settings.update({k: v for k, v in execution.items() if v is not None})
    cfg = run_config_from(settings, source=str(work / records.CONFIG)).resolved()
    cfg.validate()
    return cfg


def _fit_and_record(
    cfg: RunConfig, run: Built, writer: records.RunWriter | None, state: FitState, dist: Dist, work: Path
) -> dict:
    """Fit (from ``state``), then write ``model.pt`` and ``summary.json`` and drop the checkpoint; on an
    interruption write the summary with status ``interrupted`` and re-raise; when another rank's process
    is gone (killed, crashed), the same summary and :class:`RankLost`. Without a writer (a rank other than
    the main one) nothing is written."""
    with StopOnSignal() as stop:
        try:
            _fit(cfg, run, writer, state, dist, stop)
            if writer is None:
                return {"status": "diverged" if state.diverged_step is not None else "ok", "rank": dist.rank}
            summary = summarize(cfg, run.model, run.method, state)
            if cfg.save_model:
                _save_model(cfg, run, writer, state, dist)
        except KeyboardInterrupt as e:
            # also when Ctrl-C lands after the run finished but before its records were all written
            if writer is not None:
                writer.summary(summarize(cfg, run.model, run.method, state, interrupted=True))
            if isinstance(e, RunInterrupted):
                e.rank = dist.rank
                if (work / records.CHECKPOINT).is_file():
                    e.run_dir, e.resume = work, resume_command(work, dist)
            raise
        except RuntimeError as e:
            if not (dist.active and is_peer_failure(e)):
                raise
            if writer is not None:
                writer.summary(summarize(cfg, run.model, run.method, state, interrupted=True))
            raise RankLost(_rank_lost(work, dist)) from None
        writer.summary(summary)
        writer.drop_checkpoint()
    return summary


def _fit(
    cfg: RunConfig, run: Built, writer: records.RunWriter | None, state: FitState, dist: Dist, stop
) -> None:
    """:func:`oblique.fit.fit` as the config says, on what :func:`build` built."""
    fit(
        run.model,
        run.method,
        run.optimizer,
        run.batches,
        epochs=cfg.epochs,
        test_loader=run.test_loader,
        scheduler=run.scheduler,
        device=run.device,
        drift_every=cfg.drift_every,
        eval_every=cfg.eval_every,
        log_every=cfg.log_every,
        precision=cfg.precision,
        writer=writer,
        progress=cfg.progress,
        state=state,
        checkpoint_every=cfg.checkpoint_every,
        stop=stop,
        forward=run.forward,
        dist=dist,
    )


class ModelNotSaved(ObliqueError, OSError):
    """The training is over but ``model.pt`` cannot be written (a full disk); the message says what was
    kept (the final checkpoint, else the last one) and how to continue."""


class RankLost(ObliqueError, RuntimeError):
    """Under torchrun, another rank's process is gone (killed, crashed); the message names it and says how
    to continue the run."""


def _save_model(cfg: RunConfig, run: Built, writer: records.RunWriter, state: FitState, dist: Dist) -> None:
    """``model.pt``. When it cannot be written, the finished training is kept as a checkpoint (its random
    states given to every rank: none draws again), or, if that cannot be written either, the last
    checkpoint stays; the summary says ``interrupted``, and :class:`ModelNotSaved` says what is kept."""
    try:
        writer.model(run.model.state_dict())
        return
    except OSError as e:
        failure = f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)
    resume = resume_command(writer.root, dist)
    final = checkpoint_state(run.model, run.method, run.optimizer, run.scheduler, run.batches, state)
    final["rng"] = final["rng"] * dist.world
    try:
        writer.checkpoint(final)
        kept = (
            f"its final checkpoint is kept in {writer.root}: free space, then '{resume}' writes it "
            "(no step is trained again)"
        )
    except OSError:
        if (writer.root / records.CHECKPOINT).is_file():
            kept = (
                f"its last checkpoint is kept in {writer.root}: free space, then '{resume}' trains on "
                "from there"
            )
        else:
            kept = "no checkpoint could be kept either: free space, then train it again with --overwrite"
    with contextlib.suppress(OSError):
        writer.summary(summarize(cfg, run.model, run.method, state, interrupted=True))
    raise ModelNotSaved(f"{failure}; the training is over but {records.MODEL} is not written: {kept}")


def resume_command(run_dir: str | os.PathLike, dist: Dist | None = None) -> str:
    """The command that continues the run in ``run_dir``: ``oblique run --resume RUN_DIR``, under torchrun
    with the ranks this run has (its processes per node, and nodes)."""
    dist = dist or Dist()
    if not dist.active:
        return f"oblique run --resume {run_dir}"
    if dist.local_world == dist.world:
        return f"torchrun --nproc_per_node={dist.world} -m oblique run --resume {run_dir}"
    nodes = dist.world // max(1, dist.local_world)
    return (
        f"torchrun --nnodes={nodes} --nproc_per_node={dist.local_world} ... -m oblique run --resume {run_dir}"
    )


def _rank_lost(work: Path, dist: Dist) -> str:
    """What :class:`RankLost` says: which rank is gone (those on this machine can be told), and what next."""
    lost = dist.lost_ranks()
    who = f"rank{'s' * (len(lost) > 1)} {', '.join(map(str, lost))}" if lost else "another rank"
    if (work / records.CHECKPOINT).is_file():
        then = f"its last checkpoint is in {work}: continue it with '{resume_command(work, dist)}'"
    else:
        then = f"{work} holds no checkpoint yet: start the run again with --overwrite"
    return (
        f"{who} of the {dist.world} processes of this run stopped (killed or crashed) while it trained; "
        f"{then}"
    )


def _checked(cfg: RunConfig) -> RunConfig:
    """``cfg`` resolved and validated; a run in its folder that must not be replaced refused before
    anything is loaded."""
    cfg = cfg.resolved()
    cfg.validate()
    _refuse_existing(cfg, cfg.resolved_out())
    return cfg


def _refuse_existing(cfg: RunConfig, out: Path) -> None:
    """Refuse a run folder that holds a run ``cfg`` must not replace: a finished one (or one whose records
    say so), an interrupted one with a checkpoint; ``overwrite`` replaces them. (That ``out`` is a folder
    is :meth:`RunConfig.validate`'s check.)

    :func:`train` asks this twice, on purpose: before anything is built (a refusal in a moment, not after
    the data is loaded), and again under the run folder's lock (:func:`prepare_out`), where another process
    may have finished a run in the folder in between; only then are the old records removed."""
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
    if _claims_finished(out):  # a finished run whose metrics.jsonl is damaged: not replaced unasked
        raise ConfigError(
            f"{out} holds a finished run whose {records.METRICS} is damaged; pass --overwrite to train it again, "
            "or choose another --out"
        )


def _claims_finished(out: Path) -> bool:
    try:
        return records.read_summary(out).get("status") in records.FINISHED
    except storage.RecordError:
        return False


def _work_dir(cfg: RunConfig) -> Path:
    """Where the run writes: its folder, or ``OUT.new`` beside a finished run it replaces."""
    out = cfg.resolved_out()
    return _replacement(out) if cfg.overwrite and records.is_finished(out) else out


def _replacement(out: Path) -> Path:
    real = _real(out)
    return real.with_name(real.name + ".new")


def _real(out: Path) -> Path:
    """``out``, or the folder it links to: a run replaced through a symlink is replaced where it is, and
    the link stays."""
    return out.resolve() if out.is_symlink() else out


def prepare_out(cfg: RunConfig, work: Path | None = None) -> Path:
    """Check the run folder (refusing a finished or resumable run unless ``cfg.overwrite``) and empty
    ``work`` (default: the run folder) of a previous run's records."""
    out = cfg.resolved_out()
    work = work or out
    _refuse_existing(cfg, out)
    work.mkdir(parents=True, exist_ok=True)
    for name in (records.CONFIG, records.METRICS, records.SUMMARY, records.MODEL, records.CHECKPOINT):
        (work / name).unlink(missing_ok=True)
    records.remove_leftovers(work)
    return work


def _swap_in(work: Path, out: Path) -> None:
    """Put the finished replacement ``work`` (``OUT.new``) in place of ``out``; nothing when they are
    the same folder or the replacement is not over."""
    if work.resolve() != _replacement(out).resolve() or not records.is_finished(work):
        return
    out = _real(out)
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
    test_loader: test_batches
    device: torch.device
    forward: nn.Module  # what the forward pass goes through: the model, or its DistributedDataParallel


def build(cfg: RunConfig, dist: Dist | None = None) -> Built:
    """Data, model (prepared by the method), optimizer, training order and lr schedule of a resolved
    config. Sets torch's threads and determinism, seeds torch with ``cfg.seed``, so the initialization and
    the data order are those of the seed. In-memory data sets go to a GPU once. Nothing is written.
    """
    dist = dist or Dist()
    device = _configure_torch(cfg, dist)
    torch.manual_seed(cfg.seed)
    data = get_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download, **cfg.data_options)
    data = _data_on(data, device, cfg.seed)
    method = cfg.build_method()
    try:
        model = get_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels).to(device)
    except ValueError as e:
        raise ConfigError(f"model {cfg.model}: {e}", settings=("model",)) from None
    if cfg.channels_last:  # before the method: a parametrization's tensors keep the layout they get
        model = model.to(memory_format=torch.channels_last)
        model._oblique_channels_last = True  # the loop feeds 4-D batches channels-last too
    model = method.prepare(model)
    forward = _distributed(model, cfg, dist, device)
    optimizer = method.make_optimizer(model, cfg.optimizer_config())
    # the order's generator goes where _data_on put the training set
    on_device = isinstance(data.train, TensorData) and data.train.x.device.type != "cpu"
    g = torch.Generator(device=device if on_device else "cpu").manual_seed(cfg.seed)
    pin = device.type == "cuda"
    drop_last = dist.active or len(data.train) >= 2 * cfg.batch_size  # equal shares under torchrun
    batches = Batches(
        data.train,
        cfg.batch_size,
        generator=g,
        drop_last=drop_last,
        num_workers=cfg.data_workers,
        pin_memory=pin,
        rank=dist.rank,
        world=dist.world,
        order=cfg.batch_order,
    )

    test_loader = test_batches(
        data.test, max(cfg.batch_size, 500), num_workers=cfg.data_workers, pin_memory=pin
    )
    factor = _lr_factor(cfg, len(batches), len(batches) * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return Built(data, model, method, optimizer, scheduler, batches, test_loader, device, forward)


def _configure_torch(cfg: RunConfig, dist: Dist) -> torch.device:
    """Threads, deterministic algorithms and cuDNN autotuning as ``cfg`` says; the device (a rank's own
    under torchrun)."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = dist.device if dist.active else cfg.torch_device()
    if cfg.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what cuBLAS needs to be deterministic
    torch.use_deterministic_algorithms(cfg.deterministic)
    torch.backends.cudnn.deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not cfg.deterministic
    return device


def _distributed(model: nn.Module, cfg: RunConfig, dist: Dist, device: torch.device) -> nn.Module:
    """What the forward pass goes through: under torchrun the prepared model (optionally with synchronized
    BatchNorm) wrapped in ``DistributedDataParallel``; else the model. The method's parametrizations and
    manifold parameters exist before the wrap; optimizer, hooks, drift and records use ``model``."""
    if not dist.active:
        return model
    if cfg.batch_size % dist.world:
        raise ConfigError(
            f"batch_size {cfg.batch_size} (the global batch) must be divisible by the {dist.world} processes",
            settings=("batch_size",),
        )
    if cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _data_on(data: Data, device: torch.device, seed: int) -> Data:
    """In-memory sets moved to ``device`` once; the training set's augmentation (if any) given its own
    generator there, seeded with ``seed + 1`` (the data order's is ``seed``)."""
    if device.type != "cpu":
        data.train = data.train.to(device) if isinstance(data.train, TensorData) else data.train
        data.test = data.test.to(device) if isinstance(data.test, TensorData) else data.test
    transform = getattr(data.train, "transform", None)
    if transform is not None and hasattr(transform, "generator"):
        aug_device = data.train.x.device if isinstance(data.train, TensorData) else torch.device("cpu")
        transform.generator = torch.Generator(device=aug_device).manual_seed(seed + 1)
    return data


def _config_record(cfg: RunConfig, run: Built, out: Path, dist: Dist) -> dict:
    """``config.json``: every setting, resolved, and what this machine made of it."""
    config = cfg.recorded()
    config.update(
        out=str(out),
        method_config=run.method.config(),
        targeted=[t.name for t in run.method.target_modules(run.model)],
        strength=run.method.strength,
        num_params=sum(p.numel() for p in run.model.parameters()),
        torch_version=torch.__version__,
        threads_used=torch.get_num_threads(),
        device_used=str(run.device),
        environment=environment(run.device),
        world_size=dist.world,
        batch_size_per_rank=cfg.batch_size // dist.world,
    )
    if cfg.optimizer == "muon":  # what Muon ran with, and what stepped the other parameters
        config["muon"] = _muon_record(cfg, run.optimizer)
    return config


def _muon_record(cfg: RunConfig, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``config.json``'s ``muon``: the Muon group's hyperparameters, and the other parameters' optimizer."""
    group = optimizer.param_groups[-1]
    muon = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
    muon["lr"] = cfg.muon_lr  # (the group's lr is the scheduled one)
    return {**muon, "others": cfg.optimizer_config().others}


def summarize(
    cfg: RunConfig, model: nn.Module, method: Method, state: FitState, *, interrupted: bool = False
) -> dict:
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
    summary.update(times, drift=_final_drift(model, method))
    return summary


def _final_drift(model: nn.Module, method: Method) -> dict:
    """The drift of the weights the run ended with; NaN when they went non-finite where a
    reparametrization cannot even be computed (a diverged ONI or OLM run)."""
    try:
        return model_drift(model, weights=method.effective_filters(model))
    except torch.linalg.LinAlgError:
        return drift_record(([], None))


def remove_run(path: str | os.PathLike) -> None:
    """Delete a run directory (used by the study runner to rerun an unfinished run from the start)."""
    shutil.rmtree(path, ignore_errors=True)
