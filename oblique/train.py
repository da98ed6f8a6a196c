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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from oblique import records
from oblique.data import get_dataset
from oblique.geometry import model_drift
from oblique.methods import OptimizerConfig, get_method
from oblique.methods.base import training_step
from oblique.models import get_model

__all__ = ["SCHEDULES", "ConfigError", "RunConfig", "train"]

SCHEDULES = ("constant", "multistep", "cosine")
OPTIMIZERS = ("sgd", "adam")


class ConfigError(ValueError):
    """An invalid run setting; the message says what is wrong and what is valid."""


@dataclass
class RunConfig:
    """Every setting of one run. Defaults are the embedded default (README, "The default setting").

    The training-recipe fields default to None, meaning "the model's standard recipe"
    (:mod:`oblique.recipes`); :meth:`resolved` fills them in, and ``config.json`` records the result.
    """

    method: str = "nl"  # registry name (oblique.list_methods())
    strength: float | None = None  # λ; None = the method's default
    targets: str = "conv"  # "conv" or "conv+linear": which weights the method acts on
    hp: dict[str, Any] = field(default_factory=dict)  # the method's own hyperparameters
    model: str = "resnet1d"  # oblique.models.list_models()
    dataset: str = "mnist1d"  # oblique.data.list_datasets()
    data_root: str | None = None  # folder of on-disk data sets (CIFAR, ImageNet)
    # Training recipe: None takes the model's standard recipe (oblique.recipes), then oblique.recipes.BASE.
    optimizer: str | None = None  # "sgd" or "adam"
    lr: float | None = None  # peak learning rate
    momentum: float | None = None  # SGD momentum
    nesterov: bool | None = None  # Nesterov momentum for SGD
    weight_decay: float | None = None  # the optimizer's own L2 on *untargeted* parameters (biases, BN)
    schedule: str | None = None  # "constant", "multistep" or "cosine" (stepped per batch)
    milestones: list[float] | None = None  # multistep: epochs (values < 1: fractions of all epochs)
    gamma: float | None = None  # multistep factor
    warmup_epochs: float | None = None  # linear warm-up from 0 over this many epochs
    epochs: int | None = None  # passes over the training set
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:N"
    threads: int | None = None  # torch CPU threads; None = torch's default
    drift_every: int = 20  # record drift every N steps (and before the first and after the last)
    eval_every: int = 1  # test error every N epochs (and after the last)
    out: str | None = None  # run directory; None = runs/{method}-{model}-{dataset}-seed{seed}
    overwrite: bool = False  # replace a finished run in `out`
    progress: bool = True  # tqdm progress bar
    save_model: bool = True  # write model.pt (state_dict) at the end

    def resolved(self) -> RunConfig:
        """A copy with every recipe setting left at None filled from the model's recipe."""
        from oblique.recipes import recipe_for

        recipe = recipe_for(self.model)
        filled = {k: v for k, v in recipe.items() if getattr(self, k) is None}
        return replace(self, **filled)

    def resolved_out(self) -> Path:
        """The run directory this config writes to."""
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{self.method}-{self.model}-{self.dataset}-seed{self.seed}"

    def validate(self) -> None:
        """Raise :class:`ConfigError` on any invalid setting (before anything is written).

        Call on a :meth:`resolved` config."""
        from oblique.data import DATASETS, SPATIAL_DIMS
        from oblique.models import MODELS, UnknownModelError, input_shape

        def bad(what: str, got: Any, valid: str) -> ConfigError:
            return ConfigError(f"{what} must be {valid}; got {got!r}")

        def number(x: Any) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

        try:
            shape = input_shape(self.model)
        except UnknownModelError:
            raise bad("--model", self.model, "one of " + ", ".join(MODELS) + " (or any wrnD-K)") from None
        if self.dataset not in DATASETS:
            raise bad("--dataset", self.dataset, "one of " + ", ".join(DATASETS))
        dims = SPATIAL_DIMS.get(self.dataset)
        if dims is not None and len(shape) - 1 != dims:
            kind = {1: "1-D sequences", 2: "images"}
            raise ConfigError(
                f"--model {self.model} takes {kind.get(len(shape) - 1, 'other inputs')} but --dataset "
                f"{self.dataset} has {kind.get(dims, 'other inputs')}; pick a matching model and dataset"
            )
        if self.optimizer not in OPTIMIZERS:
            raise bad("--optimizer", self.optimizer, "one of " + ", ".join(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise bad("--schedule", self.schedule, "one of " + ", ".join(SCHEDULES))
        for name in ("epochs", "batch_size", "drift_every", "eval_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad("--" + name.replace("_", "-"), v, "an integer >= 1")
        if not (number(self.lr) and self.lr > 0):
            raise bad("--lr", self.lr, "a number > 0")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            if not (number(v) and v >= 0):
                raise bad("--" + name.replace("_", "-"), v, "a number >= 0")
        if not (number(self.gamma) and self.gamma > 0):
            raise bad("--gamma", self.gamma, "a number > 0")
        if not isinstance(self.nesterov, bool):
            raise bad("--nesterov", self.nesterov, "true or false")
        if not (
            isinstance(self.milestones, list | tuple) and all(number(m) and m >= 0 for m in self.milestones)
        ):
            raise bad("--milestones", self.milestones, "a list of epochs >= 0")
        if self.threads is not None and (
            not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1
        ):
            raise bad("--threads", self.threads, "an integer >= 1")
        try:
            self.build_method()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.torch_device()

    def build_method(self):
        return get_method(self.method, strength=self.strength, targets=self.targets, **self.hp)

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device that exists here.

    Raises:
        ConfigError: another value, or CUDA asked for where torch sees none.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N; got {spec!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    return dev


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
    from oblique.data import TensorData

    if isinstance(dataset, TensorData):  # whole batches in one indexing op
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=0)


def prepare_out(cfg: RunConfig) -> Path:
    """Check and create the run directory. Refuses a finished run unless ``cfg.overwrite``."""
    out = cfg.resolved_out()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; choose another --out")
    if records.is_finished(out) and not cfg.overwrite:
        raise ConfigError(
            f"{out} already holds a finished run; pass --overwrite to replace it, or choose another --out"
        )
    if out.exists():
        for name in (records.CONFIG, records.METRICS, records.SUMMARY, records.MODEL):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def train(cfg: RunConfig) -> dict:
    """Run one training run as ``cfg`` says; write its run directory; return the summary dict.

    Raises:
        ConfigError: an invalid setting or a finished run in ``cfg.out`` (nothing is written then).
        oblique.data.DataError: the data cannot be read.
        KeyboardInterrupt: after writing ``summary.json`` with status ``"interrupted"``.
    """
    cfg = cfg.resolved()
    cfg.validate()
    if records.is_finished(cfg.resolved_out()) and not cfg.overwrite:
        prepare_out(cfg)  # raises: refuse before loading anything
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = cfg.torch_device()
    torch.manual_seed(cfg.seed)

    # Data, model and method are built before the run folder is touched: a missing data folder or a model
    # that cannot be built leaves a finished run there intact, even with --overwrite.
    data = get_dataset(cfg.dataset, root=cfg.data_root)
    method = cfg.build_method()
    try:
        model = get_model(cfg.model, num_classes=data.num_classes, in_channels=data.in_channels).to(device)
    except ValueError as e:
        raise ConfigError(f"--model {cfg.model}: {e}") from None
    model = method.prepare(model)
    out = prepare_out(cfg)
    opt_cfg = OptimizerConfig(
        name=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    optimizer = method.make_optimizer(model, opt_cfg)

    g = torch.Generator().manual_seed(cfg.seed)
    train_loader = _loader(
        data.train, cfg.batch_size, True, g, drop_last=len(data.train) >= 2 * cfg.batch_size
    )
    test_loader = _loader(data.test, max(cfg.batch_size, 500), False, None, drop_last=False)
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg, steps_per_epoch, total))

    config = asdict(cfg)
    config.update(
        out=str(out),
        method_config=method.config(),
        strength=method.strength,
        num_params=sum(p.numel() for p in model.parameters()),
        torch_version=torch.__version__,
        threads_used=torch.get_num_threads(),
        device_used=str(device),
    )
    records.write_json_atomic(out / records.CONFIG, config)

    def drift_now() -> dict:
        return model_drift(model, weights=method.effective_weights(model))

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
    reg_time = 0.0
    step = 0
    t0 = time.perf_counter()
    bar = None
    writer = records.MetricsWriter(out / records.METRICS)
    try:
        d0 = drift_now()
        writer.write(
            {
                "type": "meta",
                "schema_version": records.SCHEMA_VERSION,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total,
                "targets": method.targets,
                "layers": list(d0["layers"]),
            }
        )
        writer.write({"type": "drift", "step": 0, "epoch": 0.0, **d0})
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=f"{method.name}", unit="step", dynamic_ncols=True, leave=False)
        last_eval: dict[str, float] = {}
        diverged = False
        model.train()
        for epoch in range(cfg.epochs):
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                step += 1
                loss = F.cross_entropy(model(x), y)
                if not torch.isfinite(loss):
                    writer.write({"type": "diverged", "step": step, "loss": str(loss.item())})
                    diverged = True
                    break
                lr = optimizer.param_groups[0]["lr"]  # the lr this step uses
                marks = training_step(method, model, optimizer, loss, step)
                pen = marks.penalty
                reg_time += (marks.regularizer_done - marks.backward_done) + (
                    marks.after_step_done - marks.step_done
                )
                sched.step()
                reg = getattr(method, "last_value", None)
                if reg is None and pen is not None:
                    reg = pen.item() / method.strength if method.strength else None
                writer.write(
                    {
                        "type": "step",
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "loss": loss.item(),
                        "lr": lr,
                        "reg": reg,
                    }
                )
                if step % cfg.drift_every == 0 or step == total:
                    writer.write(
                        {"type": "drift", "step": step, "epoch": step / steps_per_epoch, **drift_now()}
                    )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{loss.item():.3f}", err=f"{last_eval.get('test_error', float('nan')):.1f}%"
                    )
            if diverged:
                break
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                last_eval = evaluate(model, test_loader, device)
                writer.write({"type": "eval", "step": step, "epoch": float(epoch + 1), **last_eval})
        train_time = time.perf_counter() - t0
        final_drift = drift_now()
        if diverged:
            summary.update(
                status="diverged", diverged_step=step, test_error=float("nan"), test_error_top5=float("nan")
            )
        else:
            summary.update(
                status="ok", **{k: last_eval[k] for k in ("test_error", "test_error_top5", "test_loss")}
            )
        summary.update(
            steps=step,
            train_time_s=train_time,
            regularizer_time_s=reg_time,
            drift=final_drift,
        )
        if cfg.save_model:
            tmp = out / (records.MODEL + ".tmp")
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, out / records.MODEL)
        records.write_json_atomic(out / records.SUMMARY, summary)
        return summary
    except KeyboardInterrupt:
        # also when Ctrl-C lands after the run finished but before its records were all written
        summary.update(
            status="interrupted",
            steps=step,
            train_time_s=time.perf_counter() - t0,
            regularizer_time_s=reg_time,
        )
        records.write_json_atomic(out / records.SUMMARY, summary)
        raise
    finally:
        writer.close()
        if bar is not None:
            bar.close()


def remove_run(path: str | os.PathLike) -> None:
    """Delete a run directory (used by the study runner to rerun an unfinished run from the start)."""
    shutil.rmtree(path, ignore_errors=True)
