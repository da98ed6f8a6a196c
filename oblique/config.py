"""Every setting of one run: :class:`RunConfig`, resolved and validated before anything is written.

``RunConfig`` is the one list of run settings. Each field carries its help text in its metadata, and the
command line generates its ``oblique run`` flags from these fields (:mod:`oblique.cli.run_flags`), so a new
setting cannot miss its flag. Recipe settings default to ``None`` = "the model's standard recipe"
(:mod:`oblique.recipes`); :meth:`RunConfig.resolved` fills them in and ``config.json`` records the result.

Errors are :class:`ConfigError` (an :class:`oblique.errors.ObliqueError`) and name the setting as the
library knows it (``lr must be a number > 0; got -1``); the command line renders it as its flag.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from oblique.errors import ObliqueError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ConfigError",
    "RunConfig",
    "read_toml",
    "resolve_device",
    "overlay",
    "run_config_from",
    "setting_kind",
]

SCHEDULES = ("constant", "multistep", "cosine")
OPTIMIZERS = ("sgd", "adam")
#: Seeds are 0 <= seed < SEED_LIMIT (torch's generators take a 64-bit seed).
SEED_LIMIT = 2**63
#: The most epochs (and the latest warm-up end or milestone) a run may ask for: far beyond any recipe, and
#: small enough that steps and learning-rate schedules stay finite numbers.
MAX_EPOCHS = 1_000_000
#: The most torch CPU threads a run may ask for.
MAX_THREADS = 4096


class ConfigError(ObliqueError, ValueError):
    """An invalid run setting; the message says what is wrong and what is valid."""


def _setting(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A RunConfig field with its help text (and any flag detail) in the field's metadata."""
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class RunConfig:
    """Every setting of one run. Defaults are the embedded default (README, "The default setting").

    The training-recipe fields default to None, meaning "the model's standard recipe"
    (:mod:`oblique.recipes`); :meth:`resolved` fills them in, and ``config.json`` records the result.
    """

    method: str = _setting("nl", "method name (see 'oblique methods'); default nl")
    strength: float | None = _setting(None, "regularization factor λ; default: the method's own")
    targets: str = _setting("conv", "which weights the method acts on: conv or conv+linear; default conv")
    hp: dict[str, Any] = _setting({}, "a method hyperparameter; repeatable", metavar="NAME=VALUE")
    model: str = _setting("resnet1d", "model name; default resnet1d")
    dataset: str = _setting("mnist1d", "dataset name; default mnist1d")
    data_root: str | None = _setting(None, "folder holding on-disk data sets (CIFAR, ImageNet)")
    # Training recipe: None takes the model's standard recipe (oblique.recipes), then oblique.recipes.BASE.
    optimizer: str | None = _setting(None, "sgd or adam; default: the model's recipe (oblique.recipes)")
    lr: float | None = _setting(None, "peak learning rate; default: the model's recipe")
    momentum: float | None = _setting(None, "SGD momentum; default: the model's recipe")
    nesterov: bool | None = _setting(None, "Nesterov momentum; default: the model's recipe")
    weight_decay: float | None = _setting(
        None, "optimizer L2 on untargeted parameters (never the targets); default 0"
    )
    schedule: str | None = _setting(None, "constant, multistep or cosine; default: the model's recipe")
    milestones: list[float] | None = _setting(
        None, "multistep epochs, comma-separated (values < 1: fractions of all epochs)"
    )
    gamma: float | None = _setting(None, "multistep factor; default: the model's recipe")
    warmup_epochs: float | None = _setting(None, "linear warm-up epochs; default: the model's recipe")
    epochs: int | None = _setting(None, "epochs; default: the model's recipe (15 for resnet1d)")
    batch_size: int | None = _setting(None, "batch size; default: the model's recipe (100 for resnet1d)")
    seed: int = _setting(0, "random seed; default 0")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N; default auto")
    threads: int | None = _setting(None, "torch CPU threads; default torch's")
    checkpoint_every: int | None = _setting(
        None,
        "write a checkpoint every N epochs (0: only when stopped by a signal); default: the model's "
        "recipe (1 for CIFAR and ImageNet models, 0 for MNIST-1D)",
    )
    drift_every: int = _setting(20, "record drift every N steps; default 20")
    eval_every: int = _setting(1, "test error every N epochs; default 1")
    out: str | None = _setting(None, "run folder; default runs/METHOD-MODEL-DATASET-seedSEED")
    overwrite: bool = _setting(False, "replace a finished run in --out")
    progress: bool = _setting(True, "no progress bar")
    save_model: bool = _setting(True, "do not write model.pt")

    def __post_init__(self) -> None:
        _check_kinds(self)

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
        self._validate_model_and_data()
        self._validate_recipe()
        self._validate_execution()
        try:
            method = self.build_method()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.strength is not None and not method.uses_strength and self.strength != method.default_strength:
            raise ConfigError(
                f"strength does not apply to method {self.method} (it has no regularization factor); "
                f"got {self.strength!r}: leave strength out",
                settings=("strength",),
            )
        self.torch_device()

    def _validate_model_and_data(self) -> None:
        from oblique.data import DATASETS, SPATIAL_DIMS
        from oblique.models import MODELS, UnknownModelError, input_shape

        try:
            shape = input_shape(self.model)
        except UnknownModelError:
            raise _bad("model", self.model, "one of " + ", ".join(MODELS) + " (or any wrnD-K)") from None
        if self.dataset not in DATASETS:
            raise _bad("dataset", self.dataset, "one of " + ", ".join(DATASETS))
        dims = SPATIAL_DIMS.get(self.dataset)
        if dims is not None and len(shape) - 1 != dims:
            kind = {1: "1-D sequences", 2: "images"}
            raise ConfigError(
                f"model {self.model} takes {kind.get(len(shape) - 1, 'other inputs')} but dataset "
                f"{self.dataset} has {kind.get(dims, 'other inputs')}; pick a matching model and dataset",
                settings=("model", "dataset"),
            )

    def _validate_recipe(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise _bad("optimizer", self.optimizer, "one of " + ", ".join(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise _bad("schedule", self.schedule, "one of " + ", ".join(SCHEDULES))
        for name in ("epochs", "batch_size", "drift_every", "eval_every"):
            v = getattr(self, name)
            if not _integer(v) or v < 1:
                raise _bad(name, v, "an integer >= 1")
        if self.epochs > MAX_EPOCHS:
            raise _bad("epochs", self.epochs, f"an integer <= {MAX_EPOCHS}")
        if not (_number(self.lr) and self.lr > 0):
            raise _bad("lr", self.lr, "a number > 0")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            if not (_number(v) and v >= 0):
                raise _bad(name, v, "a number >= 0")
        if self.warmup_epochs > MAX_EPOCHS:
            raise _bad("warmup_epochs", self.warmup_epochs, f"a number of epochs <= {MAX_EPOCHS}")
        if not (_number(self.gamma) and 0 < self.gamma <= 1):  # > 1 would grow the lr, and overflow it
            raise _bad("gamma", self.gamma, "a number > 0 and <= 1")
        if not isinstance(self.nesterov, bool):
            raise _bad("nesterov", self.nesterov, "true or false")
        if not (
            isinstance(self.milestones, list | tuple) and all(_number(m) and m >= 0 for m in self.milestones)
        ):
            raise _bad("milestones", self.milestones, "a list of epochs >= 0")
        if any(m > MAX_EPOCHS for m in self.milestones):
            raise _bad("milestones", self.milestones, f"a list of epochs <= {MAX_EPOCHS}")

    def _validate_execution(self) -> None:
        if not _integer(self.checkpoint_every) or self.checkpoint_every < 0:
            raise _bad("checkpoint_every", self.checkpoint_every, "an integer >= 0")
        if self.threads is not None and (not _integer(self.threads) or self.threads < 1):
            raise _bad("threads", self.threads, "an integer >= 1")
        if self.threads is not None and self.threads > MAX_THREADS:
            raise _bad("threads", self.threads, f"an integer <= {MAX_THREADS}")
        if not (0 <= self.seed < SEED_LIMIT):
            raise _bad("seed", self.seed, "an integer >= 0 and < 2**63")
        for name in ("out", "data_root"):
            v = getattr(self, name)
            if v is not None and (not v.strip() or "\0" in v):
                raise _bad(name, v, "a folder name (not empty)" if not v.strip() else "a folder name")
        out = self.resolved_out()
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out {out} exists and is not a folder; choose another --out", settings=("out",))

    def check_data(self) -> None:
        """Check, without reading it, that the data set can be found (its folder, for on-disk data sets).

        Raises:
            oblique.data.DataError: the data folder is not there."""
        from oblique.data import check_dataset

        check_dataset(self.dataset, self.data_root)

    def build_method(self):
        """The method this config names, built with its strength, targets and hyperparameters."""
        from oblique.methods import get_method

        return get_method(self.method, strength=self.strength, targets=self.targets, **self.hp)

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def setting_kind(f) -> str:
    """What kind of value a RunConfig field holds, read from its annotation: ``"str"``, ``"int"``,
    ``"float"``, ``"bool"``, ``"floats"`` (a list of numbers) or ``"table"`` (NAME = VALUE pairs)."""
    text = str(f.type)
    for kind, marker in (("table", "dict["), ("floats", "list["), ("bool", "bool"), ("float", "float"),
                         ("int", "int")):  # fmt: skip
        if marker in text:
            return kind
    return "str"


#: how each kind of setting (:func:`setting_kind`) is named in messages
_KIND_TEXT = {"str": "text", "int": "an integer", "float": "a number", "bool": "true or false",
              "floats": "a list of numbers", "table": "a table of NAME = VALUE"}  # fmt: skip


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return _integer(value)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "floats":
        return isinstance(value, list | tuple) and all(_of_kind(v, "float") for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)  # table


def _check_kinds(cfg: RunConfig) -> None:
    """Every setting of ``cfg`` of the kind its annotation says (a TOML ``overwrite = "no"`` is refused,
    not read as true); ``None`` only where the default is ``None`` (= the recipe's or torch's)."""
    for f in fields(cfg):
        value, kind = getattr(cfg, f.name), setting_kind(f)
        if value is None and f.default is None:
            continue
        if not _of_kind(value, kind):
            raise _bad(f.name, value, _KIND_TEXT[kind])


def _bad(setting: str, got: Any, valid: str) -> ConfigError:
    return ConfigError(f"{setting} must be {valid}; got {_short(got)}", settings=(setting,))


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


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
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {spec!r}", settings=("device",))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device cuda asked for, but torch sees no CUDA device; use --device cpu", settings=("device",)
        )
    return dev


def read_toml(path: str | Path) -> dict:
    """Read a TOML config file; raise :class:`ConfigError` with one line if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None


def overlay(values: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Run settings ``given`` (e.g. flags) laid over ``values`` (e.g. a config file): ``given`` wins,
    except that the method hyperparameters (``hp``) of both are merged, ``given``'s winning per name.

    >>> overlay({"lr": 0.1, "hp": {"iters": 3}}, {"lr": 0.2, "hp": [("eps", "1e-3")]})
    {'lr': 0.2, 'hp': {'iters': 3, 'eps': '1e-3'}}
    """
    out = {**values, **given}
    if "hp" in given and isinstance(values.get("hp"), dict):
        try:
            out["hp"] = {**values["hp"], **dict(given["hp"])}
        except (TypeError, ValueError):
            pass  # not NAME = VALUE pairs: run_config_from says so
    return out


def run_config_from(values: Mapping[str, Any], source: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a mapping of its fields (``-`` or ``_`` in keys; ``hp`` a table or a
    list of ``(NAME, VALUE)`` pairs). ``source`` names where the values came from, for the message.

    Raises:
        ConfigError: an unknown setting, or ``hp`` that is not a table.
    """
    valid = RunConfig.field_names()
    kw: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in valid:
            raise ConfigError(f"{source}: unknown setting {key!r}; valid: {', '.join(valid)}")
        kw[name] = value
    if "hp" in kw:
        hp = kw["hp"]
        if isinstance(hp, list):  # --hp k=v pairs
            try:
                hp = dict(hp)
            except (TypeError, ValueError):
                pass
        if not isinstance(hp, dict):
            raise ConfigError(f"{source}: 'hp' must be a table of NAME = VALUE; got {hp!r}")
        kw["hp"] = hp
    return RunConfig(**kw)
