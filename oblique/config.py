"""Every setting of one run: :class:`RunConfig`, resolved and validated before anything is written.

``RunConfig`` is the one list of run settings. Each field carries its help text in its metadata, and the
command line generates its ``oblique run`` flags from these fields
(:func:`oblique.cli.run.add_run_arguments`), so a new setting cannot miss its flag. Recipe settings default to ``None`` = "the model's standard recipe"
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
from oblique.text import short as _short

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "ConfigError",
    "RunConfig",
    "device_name",
    "environment",
    "read_toml",
    "resolve_device",
    "overlay",
    "run_config_from",
    "setting_kind",
    "settings_from",
]

SCHEDULES = ("constant", "multistep", "cosine")
OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("fp32", "bf16")
#: Seeds are 0 <= seed < SEED_LIMIT (torch's generators take a 64-bit seed).
SEED_LIMIT = 2**63
#: The most epochs (and the latest warm-up end or milestone) a run may ask for: far beyond any recipe, and
#: small enough that steps and learning-rate schedules stay finite numbers.
MAX_EPOCHS = 1_000_000
#: The largest learning rate and optimizer weight decay a run may ask for: far beyond any recipe (huge ones
#: overflowed float32 inside the optimizer's step).
MAX_RATE = 1000.0
#: The most torch CPU threads a run may ask for.
MAX_THREADS = 4096
#: The largest batch a run may ask for (beyond any data set's use; a batch larger than the data set is the
#: whole data set).
MAX_BATCH_SIZE = 1_000_000


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
    A ``preset`` (:mod:`oblique.presets`) is laid beneath the settings given where settings are read from
    a mapping (:func:`run_config_from`, which the command line, config files, studies and resume use) and
    by :meth:`from_preset`; a RunConfig built directly with ``preset=NAME`` only records the name.
    """

    preset: str | None = _setting(
        None,
        "a published setting by name (see 'oblique presets'): its data set, model, recipe values and data "
        "options, under a config file's and the flags' own",
    )
    method: str = _setting("nl", "method name (see 'oblique methods'); default nl")
    strength: float | None = _setting(None, "regularization factor λ; default: the method's own")
    targets: str = _setting("conv", "which weights the method acts on: conv or conv+linear; default conv")
    hp: dict[str, Any] = _setting({}, "a method hyperparameter; repeatable", metavar="NAME=VALUE")
    model: str = _setting("resnet1d", "model name; default resnet1d")
    dataset: str = _setting("mnist1d", "dataset name; default mnist1d")
    data_root: str | None = _setting(None, "folder holding on-disk data sets (CIFAR, ImageNet)")
    data_options: dict[str, Any] = _setting(
        {},
        "a data set option, e.g. MNIST-1D's num_samples=5000 (a bad key lists the valid ones); repeatable",
        metavar="KEY=VALUE",
    )
    download: bool = _setting(
        False, "download CIFAR-10/100 into --data-root when it is not there (needs oblique[vision], internet)"
    )
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
    batch_size: int | None = _setting(
        None,
        "batch size (under torchrun the global batch, split over the processes); default: the model's "
        "recipe (100 for resnet1d)",
    )
    seed: int = _setting(0, "random seed; default 0")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N; default auto")
    threads: int | None = _setting(None, "torch CPU threads; default torch's")
    precision: str = _setting(
        "fp32", "fp32, or bf16 (autocast around the forward pass and the loss; the manifold maths stays fp32)"
    )
    channels_last: bool = _setting(False, "channels-last memory format for 4-D activations and weights")
    deterministic: bool = _setting(
        False, "torch's deterministic algorithms (cuDNN benchmark off); default: cuDNN benchmark on CUDA"
    )
    data_workers: int = _setting(0, "DataLoader worker processes for data read from disk (ImageNet)")
    sync_bn: bool = _setting(False, "under torchrun: synchronized BatchNorm statistics across the processes")
    log_every: int = _setting(
        50, "write step records every N steps, in one transfer from the device (values do not depend on it)"
    )
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

    @classmethod
    def from_preset(cls, name: str, **settings: Any) -> RunConfig:
        """The preset ``name`` with ``settings`` laid over it (``data_options`` merged per key).

        >>> RunConfig.from_preset("mnist1d-paper", epochs=1).resolved().optimizer
        'adam'

        Raises:
            ConfigError: an unknown preset (the message lists the valid ones) or setting.
        """
        return run_config_from({**settings, "preset": name}, source="RunConfig.from_preset")

    def resolved(self) -> RunConfig:
        """A copy with every recipe setting left at None filled from the model's recipe, and the data
        options as their kinds (``num_samples="5000"`` from a flag is 5000; a bad one is left for
        :meth:`validate` to name)."""
        from oblique.data import check_data_options
        from oblique.recipes import recipe_for

        recipe = recipe_for(self.model)
        filled = {k: v for k, v in recipe.items() if getattr(self, k) is None}
        try:
            filled["data_options"] = check_data_options(self.dataset, self.data_options)
        except ValueError:
            pass
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
        method = self.checked_method()
        if (
            self.strength is not None
            and not method.uses_strength
            and self.strength != method.default_strength
        ):
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
        except ValueError as e:  # a WRN-d-k that cannot be built
            raise ConfigError(f"model {self.model}: {e}", settings=("model",)) from None
        if self.dataset not in DATASETS:
            raise _bad("dataset", self.dataset, "one of " + ", ".join(DATASETS))
        self._validate_data_options()
        dims = SPATIAL_DIMS.get(self.dataset)
        if dims is not None and len(shape) - 1 != dims:
            kind = {1: "1-D sequences", 2: "images"}
            raise ConfigError(
                f"model {self.model} takes {kind.get(len(shape) - 1, 'other inputs')} but dataset "
                f"{self.dataset} has {kind.get(dims, 'other inputs')}; pick a matching model and dataset",
                settings=("model", "dataset"),
            )

    def _validate_data_options(self) -> None:
        from oblique.data import DataError, check_data_options, check_downloadable

        if self.preset is not None:
            _preset_settings(self.preset)  # an unknown name (a RunConfig built directly) lists the valid ones
        try:
            check_data_options(self.dataset, self.data_options)
        except ValueError as e:
            raise ConfigError(str(e), settings=("data_options",)) from None
        if self.download:
            try:
                check_downloadable(self.dataset)
            except DataError as e:
                raise ConfigError(str(e), settings=("download",)) from None

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
        if self.batch_size > MAX_BATCH_SIZE:
            raise _bad("batch_size", self.batch_size, f"an integer <= {MAX_BATCH_SIZE}")
        if not (_number(self.lr) and self.lr > 0):
            raise _bad("lr", self.lr, "a number > 0")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            if not (_number(v) and v >= 0):
                raise _bad(name, v, "a number >= 0")
        for name, top in (("lr", MAX_RATE), ("weight_decay", MAX_RATE), ("momentum", 1)):
            if getattr(self, name) > top:  # more only overflows the optimizer's float32 step (a traceback)
                raise _bad(name, getattr(self, name), f"a number <= {top:g}")
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
        if self.checkpoint_every is not None and (
            not _integer(self.checkpoint_every) or self.checkpoint_every < 0
        ):
            raise _bad("checkpoint_every", self.checkpoint_every, "an integer >= 0")
        if self.precision not in PRECISIONS:
            raise _bad("precision", self.precision, "one of " + ", ".join(PRECISIONS))
        for name, low in (("log_every", 1), ("data_workers", 0)):
            v = getattr(self, name)
            if not _integer(v) or not low <= v <= 1024:
                raise _bad(name, v, f"an integer >= {low} and <= 1024")
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
            raise ConfigError(
                f"out {out} exists and is not a folder; choose another --out", settings=("out",)
            )

    def check_data(self, download: bool | None = None) -> None:
        """Check, without reading it, that the data set can be found (its folder, for on-disk data sets);
        with ``download`` (default: :attr:`download`), fetch a missing CIFAR folder now.

        Raises:
            oblique.data.DataError: the data folder is not there, or cannot be downloaded."""
        from oblique.data import check_dataset

        check_dataset(self.dataset, self.data_root, download=self.download if download is None else download)

    def build_method(self):
        """The method this config names, built with its strength, targets and hyperparameters."""
        from oblique.methods import get_method

        for key in ("strength", "targets"):  # settings of their own: get_method takes them by these names
            if key in self.hp:
                raise ConfigError(
                    f"set {key} itself, not hp {key}={_short(self.hp[key], 40)}: {key} is a run setting, "
                    f"not a hyperparameter of {self.method}",
                    settings=(key, "hp"),
                )
        return get_method(self.method, strength=self.strength, targets=self.targets, **self.hp)

    def checked_method(self):
        """:meth:`build_method`, a bad method setting raised as a :class:`ConfigError` (one line)."""
        try:
            return self.build_method()
        except ConfigError:
            raise
        except ValueError as e:  # the method's own checks: an unknown or bad hyperparameter, strength
            raise ConfigError(str(e)) from None

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


def _integer(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def resolve_device(spec: str, *, here: bool = True) -> torch.device:
    """``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a device that exists here
    (``here=False``: only the form is checked, for a device of another machine).

    Raises:
        ConfigError: another value, or (``here``) CUDA asked for where torch sees none.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {spec!r}", settings=("device",))
    if here and dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device cuda asked for, but torch sees no CUDA device; use --device cpu", settings=("device",)
        )
    return dev


def device_name(device: torch.device) -> str:
    """The card's name on CUDA (``NVIDIA H100 80GB HBM3``), ``"cpu"`` on the CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def environment(device: torch.device) -> dict[str, Any]:
    """What this machine makes of the settings that change a run's numbers and a step's cost: versions,
    the card, TF32, cuDNN autotuning, deterministic algorithms (a run's ``config.json`` and a bench record
    keep it as ``environment``)."""
    cuda = device.type == "cuda"
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device_name": device_name(device),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def read_toml(path: str | Path) -> dict:
    """Read a TOML config file; raise :class:`ConfigError` with one line if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None


#: The settings that are tables of NAME = VALUE (``--hp``, ``--data-option``): merged, not replaced, when
#: one source of settings is laid over another.
TABLES = ("hp", "data_options")


def overlay(values: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Run settings ``given`` (e.g. flags) laid over ``values`` (e.g. a config file): ``given`` wins,
    except that the tables (:data:`TABLES`: the method hyperparameters ``hp``, the ``data_options``) of
    both are merged, ``given``'s winning per name.

    >>> overlay({"lr": 0.1, "hp": {"iters": 3}}, {"lr": 0.2, "hp": [("eps", "1e-3")]})
    {'lr': 0.2, 'hp': {'iters': 3, 'eps': '1e-3'}}
    """
    out = {**values, **given}
    for name in TABLES:
        spelt = [k for k in (name, name.replace("_", "-")) if k in values]  # a TOML key may use '-'
        if name not in given or not spelt or not isinstance(values[spelt[-1]], dict):
            continue
        try:
            merged = {**values[spelt[-1]], **dict(given[name])}
        except (TypeError, ValueError):
            continue  # not NAME = VALUE pairs: run_config_from says so
        for k in spelt:
            out.pop(k, None)
        out[name] = merged
    return out


def settings_from(values: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """RunConfig settings from a mapping of its fields: keys with ``-`` or ``_``; ``hp`` and
    ``data_options`` tables, or lists of ``(NAME, VALUE)`` pairs as the flags give them; and the settings
    of the preset it names (``preset``, :mod:`oblique.presets`) beneath its own, so the order is
    defaults < preset < config file < flags. ``source`` names where the values came from, for the message.

    >>> settings_from({"preset": "cifar10-resnet110", "data-options": [("augment", "false")]})["data_options"]
    {'augment': 'false'}

    Raises:
        ConfigError: an unknown setting, a table that is not one, an unknown preset (the message lists the
            valid ones).
    """
    valid = RunConfig.field_names()
    kw: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in valid:
            raise ConfigError(f"{source}: unknown setting {key!r}; valid: {', '.join(valid)}")
        kw[name] = value
    for name in TABLES:
        if name not in kw:
            continue
        table = kw[name]
        if isinstance(table, list):  # --hp k=v, --data-option k=v pairs
            try:
                table = dict(table)
            except (TypeError, ValueError):
                pass
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {name!r} must be a table of NAME = VALUE; got {table!r}")
        kw[name] = table
    if isinstance(kw.get("preset"), str):  # another kind: RunConfig names it
        kw = overlay(_preset_settings(kw["preset"]), kw)
    return kw


def _preset_settings(name: str) -> dict[str, Any]:
    from oblique.presets import PresetError, preset_settings

    try:
        return preset_settings(name)
    except PresetError as e:
        raise ConfigError(str(e), settings=("preset",)) from None


def run_config_from(values: Mapping[str, Any], source: str = "config") -> RunConfig:
    """A :class:`RunConfig` from a mapping of its fields, read by :func:`settings_from` (the preset it
    names beneath its own settings). ``source`` names where the values came from, for the message.

    Raises:
        ConfigError: an unknown setting or preset, a table that is not one, a value of the wrong kind.
    """
    return RunConfig(**settings_from(values, source))
