"""Every setting of one run: :class:`RunConfig`, resolved and validated before anything is written.

``RunConfig`` is the one list of run settings. Each field declares, in its metadata, its help text, what a
valid value is (its bounds or choices: an :class:`oblique.options.Option`, :data:`RUN_OPTIONS`) and its
role: what the run computes, or how it executes (:class:`Execution`). From these declarations come the
command line's ``oblique run`` flags (:mod:`oblique.cli.run`), the check of each setting
(:meth:`RunConfig.validate`) and the lists of execution settings (:meth:`RunConfig.execution_settings`:
what a resumed run may change, what a study decides for its runs, what an export leaves out). Recipe
settings default to ``None`` = "the model's standard recipe" (:mod:`oblique.recipes`);
:meth:`RunConfig.resolved` fills them in and ``config.json`` records the result.

Errors are :class:`ConfigError` (:class:`oblique.options.OptionError`, an
:class:`oblique.errors.ObliqueError`) and name the setting as the library knows it
(``lr must be a number > 0 and <= 1000; got -1``); the command line renders it as its flag.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from oblique import storage
from oblique.batches import ORDERS as BATCH_ORDERS
from oblique.methods.base import OPTIMIZERS
from oblique.methods.muon import MUON_LR as _MUON_LR
from oblique.options import Option, OptionError, check_folder
from oblique.text import short as _short

__all__ = [
    "BATCH_ORDERS",
    "MUON_LR",
    "OPTIMIZERS",
    "PRECISIONS",
    "RUN_OPTIONS",
    "SCHEDULES",
    "ConfigError",
    "Execution",
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
#: Muon's learning rate when a run does not give one (``muon_lr``; :mod:`oblique.methods.muon` says why).
MUON_LR = _MUON_LR
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
#: The most log steps between records and DataLoader workers a run may ask for.
MAX_EVERY = 1024

#: An invalid run setting; the message says what is wrong and what is valid. It is the one error of a bad
#: value, :class:`oblique.options.OptionError`, under the name the run settings have always used.
ConfigError = OptionError


@dataclass(frozen=True)
class Execution:
    """The role of a run setting that says how a run executes, not what it computes (the field metadata
    ``execution``; every other setting identifies the result). A study leaves these settings out of its
    planned runs (``study.json``), so it can be resumed with another of them.

    Attributes:
        on_resume: a resumed run may change it (:data:`oblique.train.RESUME_OVERRIDES`).
        study_decides: a study sets it for each run itself (the run's folder, its threads, no progress bar,
            no overwrite, a download done once at planning); otherwise a study passes the value it is given
            on to every run (:func:`oblique.study.execute.execution_settings`).
        tells_runs_apart: when exported runs differ in it, the export names each run's value
            (:func:`oblique.export.export_csv`); False for what only says where and how one process ran.
    """

    on_resume: bool = False
    study_decides: bool = False
    tells_runs_apart: bool = True


def _setting(
    default: Any = None,
    help: str = "",
    *,
    execution: Execution | None = None,
    by_method: bool = False,
    metavar: str | None = None,
    **check: Any,
) -> Any:
    """A RunConfig field: its default, its help text, its role (``execution``: how the run executes; none:
    what it computes) and what a valid value is (``check``: the :class:`~oblique.options.Option` keywords
    ``choices``, ``minimum``, ``maximum``, ``min_exclusive``, ``max_exclusive``, ``optional``), all in the
    field's metadata. ``by_method``: the method declares the valid values (``strength``, ``targets``:
    :class:`oblique.methods.base.Method`), so :meth:`RunConfig.validate` leaves them to it."""
    meta = {"help": help, "execution": execution, "by_method": by_method, "check": check}
    if metavar is not None:
        meta["metavar"] = metavar
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


_RESUMABLE = Execution(on_resume=True)  # how a run goes on: another device, log or checkpoint interval


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
        optional=True,
    )
    method: str = _setting("nl", "method name (see 'oblique methods'); default nl")
    strength: float | None = _setting(
        None, "regularization factor λ; default: the method's own", by_method=True, optional=True
    )
    targets: str = _setting(
        "conv",
        "which weights the method acts on: layer kinds joined by + (conv, conv_transpose, linear, attention, "
        "embedding), or all (every kind but embedding); 'oblique targets MODEL' lists them; default conv",
        by_method=True,
    )
    exclude: list[str] = _setting(
        [],
        "leave out the layers whose name matches this glob (e.g. fc, 'layer1.*'); repeatable",
        by_method=True,
        metavar="GLOB",
    )
    hp: dict[str, Any] = _setting({}, "a method hyperparameter; repeatable", metavar="NAME=VALUE")
    model: str = _setting("resnet1d", "model name; default resnet1d")
    dataset: str = _setting("mnist1d", "dataset name; default mnist1d")
    data_root: str | None = _setting(
        None, "folder holding on-disk data sets (CIFAR, ImageNet)", optional=True
    )
    data_options: dict[str, Any] = _setting(
        {},
        "a data set option, e.g. MNIST-1D's num_samples=5000 (a bad key lists the valid ones); repeatable",
        metavar="KEY=VALUE",
    )
    download: bool = _setting(
        False,
        "download CIFAR-10/100 into --data-root when it is not there (needs oblique[vision], internet)",
        execution=Execution(study_decides=True),
    )
    # Training recipe: None takes the model's standard recipe (oblique.recipes), then oblique.recipes.BASE.
    optimizer: str | None = _setting(
        None,
        "sgd, adam, adamw, or muon (torch.optim.Muon on the targeted filter matrices, the recipe's optimizer "
        "on every other parameter; torch >= 2.9); a method with its own Riemannian optimizer takes sgd or "
        "adam; default: the model's recipe (oblique.recipes)",
        choices=OPTIMIZERS,
    )
    muon_lr: float | None = _setting(
        None,
        f"optimizer muon: Muon's learning rate on the targeted filter matrices (the schedule scales it as it "
        f"scales lr; lr stays the other parameters'); default {_MUON_LR}",
        minimum=0,
        min_exclusive=True,
        maximum=MAX_RATE,
        optional=True,
    )
    lr: float | None = _setting(
        None,
        "peak learning rate; default: the model's recipe",
        minimum=0,
        min_exclusive=True,
        maximum=MAX_RATE,
    )
    momentum: float | None = _setting(None, "SGD momentum; default: the model's recipe", minimum=0, maximum=1)
    nesterov: bool | None = _setting(None, "Nesterov momentum; default: the model's recipe")
    weight_decay: float | None = _setting(
        None,
        "optimizer L2 on untargeted parameters (never the targets); default 0",
        minimum=0,
        maximum=MAX_RATE,
    )
    schedule: str | None = _setting(
        None, "constant, multistep or cosine; default: the model's recipe", choices=SCHEDULES
    )
    milestones: list[float] | None = _setting(
        None,
        "multistep epochs, comma-separated (values < 1: fractions of all epochs)",
        minimum=0,
        maximum=MAX_EPOCHS,
    )
    # gamma > 1 would grow the lr, and overflow it
    gamma: float | None = _setting(
        None, "multistep factor; default: the model's recipe", minimum=0, min_exclusive=True, maximum=1
    )
    warmup_epochs: float | None = _setting(
        None, "linear warm-up epochs; default: the model's recipe", minimum=0, maximum=MAX_EPOCHS
    )
    epochs: int | None = _setting(
        None, "epochs; default: the model's recipe (15 for resnet1d)", minimum=1, maximum=MAX_EPOCHS
    )
    batch_size: int | None = _setting(
        None,
        "batch size (under torchrun the global batch, split over the processes); default: the model's "
        "recipe (100 for resnet1d)",
        minimum=1,
        maximum=MAX_BATCH_SIZE,
    )
    batch_order: str = _setting(
        "shuffle",
        "the order of the training batches: shuffle (a new permutation every epoch) or fixed (the stored "
        "order, the same batches every epoch, as the MNIST-1D paper's loop takes them); default shuffle",
        choices=BATCH_ORDERS,
    )
    seed: int = _setting(0, "random seed; default 0", minimum=0, maximum=SEED_LIMIT, max_exclusive=True)
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N; default auto", execution=_RESUMABLE)
    threads: int | None = _setting(
        None,
        "torch CPU threads; default torch's",
        execution=Execution(study_decides=True, tells_runs_apart=False),
        minimum=1,
        maximum=MAX_THREADS,
        optional=True,
    )
    precision: str = _setting(
        "fp32",
        "fp32, or bf16 (autocast around the forward pass and the loss; the manifold maths stays fp32)",
        choices=PRECISIONS,
    )
    channels_last: bool = _setting(False, "channels-last memory format for 4-D activations and weights")
    deterministic: bool = _setting(
        False, "torch's deterministic algorithms (cuDNN benchmark off); default: cuDNN benchmark on CUDA"
    )
    data_workers: int = _setting(
        0, "DataLoader worker processes for data read from disk (ImageNet)", minimum=0, maximum=MAX_EVERY
    )
    sync_bn: bool = _setting(False, "under torchrun: synchronized BatchNorm statistics across the processes")
    log_every: int = _setting(
        50,
        "write step records every N steps, in one transfer from the device (values do not depend on it)",
        execution=_RESUMABLE,
        minimum=1,
        maximum=MAX_EVERY,
    )
    checkpoint_every: int | None = _setting(
        None,
        "write a checkpoint every N epochs (0: only when stopped by a signal); default: the model's "
        "recipe (1 for CIFAR and ImageNet models, 0 for MNIST-1D)",
        execution=_RESUMABLE,
        minimum=0,
        optional=True,
    )
    drift_every: int = _setting(20, "record drift every N steps; default 20", minimum=1)
    eval_every: int = _setting(1, "test error every N epochs; default 1", minimum=1)
    out: str | None = _setting(
        None,
        "run folder; default runs/METHOD-MODEL-DATASET-seedSEED",
        execution=Execution(study_decides=True, tells_runs_apart=False),
        optional=True,
    )
    overwrite: bool = _setting(
        False,
        "replace a finished run in --out",
        execution=Execution(study_decides=True, tells_runs_apart=False),
    )
    progress: bool = _setting(
        True,
        "no progress bar",
        execution=Execution(on_resume=True, study_decides=True, tells_runs_apart=False),
    )
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

    @classmethod
    def execution_settings(cls, **role: bool) -> tuple[str, ...]:
        """The settings that say how a run executes, not what it computes (declared by their
        :class:`Execution`), in field order; with ``role`` (keywords of :class:`Execution`), only those whose
        role has these values.

        >>> RunConfig.execution_settings(on_resume=True)
        ('device', 'log_every', 'checkpoint_every', 'progress')
        >>> RunConfig.execution_settings(study_decides=False)
        ('device', 'log_every', 'checkpoint_every')
        """
        roles = [f.name for f in fields(Execution)]
        unknown = sorted(set(role) - set(roles))
        if unknown:
            raise TypeError(f"no execution role {', '.join(unknown)}; valid: {', '.join(roles)}")
        chosen = []
        for f in fields(cls):
            execution = f.metadata.get("execution")
            if execution is not None and all(getattr(execution, k) == v for k, v in role.items()):
                chosen.append(f.name)
        return tuple(chosen)

    def resolved(self) -> RunConfig:
        """A copy with every recipe setting left at None filled from the model's recipe, and the data
        options as their kinds (``num_samples="5000"`` from a flag is 5000; a bad one is left for
        :meth:`validate` to name)."""
        from oblique.data import check_data_options
        from oblique.recipes import recipe_for

        recipe = recipe_for(self.model)
        filled = {k: v for k, v in recipe.items() if getattr(self, k) is None}
        if self.muon_lr is None and filled.get("optimizer", self.optimizer) == "muon":
            filled["muon_lr"] = MUON_LR  # what Muon ran with, recorded
        try:
            filled["data_options"] = check_data_options(self.dataset, self.data_options)
        except ValueError:
            pass
        return replace(self, **filled)

    def identity(self) -> dict[str, Any]:
        """What this run computes: every setting but those of how it executes (:class:`Execution`),
        resolved, as ``config.json`` records them and a resume reads them back (through JSON and
        :func:`run_config_from`): the config a run starts with and the one read from its ``config.json``
        have the same identity. Every checkpoint records it (Note [checkpoint identity] in
        :mod:`oblique.records`).

        >>> cfg = RunConfig(seed=3)
        >>> cfg.identity() == RunConfig(seed=3, device="cpu", log_every=5).identity()  # how, not what
        True
        >>> "seed" in cfg.identity(), "device" in cfg.identity()
        (True, False)
        """
        recorded = storage.loads_json(storage.dumps_json(self.resolved().recorded()))
        again = run_config_from(recorded, source="config.json").resolved().recorded()
        execution = set(self.execution_settings())
        return storage.loads_json(storage.dumps_json({k: v for k, v in again.items() if k not in execution}))

    def recorded(self) -> dict[str, Any]:
        """Every setting by name, as ``config.json`` and ``study.json`` record them: ``exclude`` and
        ``muon_lr`` only when given (``muon_lr`` is given to every resolved Muon run), so a run without
        them is recorded (and identified) as runs were before they existed."""
        out = asdict(self)
        if not out["exclude"]:
            del out["exclude"]
        if out["muon_lr"] is None:
            del out["muon_lr"]
        return out

    def resolved_out(self) -> Path:
        """The run directory this config writes to."""
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{self.method}-{self.model}-{self.dataset}-seed{self.seed}"

    def validate(self) -> None:
        """Raise :class:`ConfigError` on any invalid setting (before anything is written).

        Each setting is checked against its declaration (:data:`RUN_OPTIONS`); the checks that need more
        than one setting, a registry or the disk are the named steps below. Call on a :meth:`resolved`
        config."""
        self._check_model_and_data()
        for f in fields(self):
            if not f.metadata["by_method"]:  # strength and targets: the method's checks, below
                RUN_OPTIONS[f.name].check(getattr(self, f.name))
        self._check_folders()
        method = self.checked_method()
        self._check_strength_applies(method)
        self._check_optimizer_applies(method)
        self.torch_device()

    def _check_model_and_data(self) -> None:
        """The model and the data set are registered and take the same inputs; the data options are the
        data set's; the preset exists."""
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
        self._check_data_options()
        dims = SPATIAL_DIMS.get(self.dataset)
        if dims is not None and len(shape) - 1 != dims:
            kind = {1: "1-D sequences", 2: "images"}
            raise ConfigError(
                f"model {self.model} takes {kind.get(len(shape) - 1, 'other inputs')} but dataset "
                f"{self.dataset} has {kind.get(dims, 'other inputs')}; pick a matching model and dataset",
                settings=("model", "dataset"),
            )

    def _check_data_options(self) -> None:
        """The data options are the data set's, each valid; ``download`` is for a data set that can be
        downloaded."""
        from oblique.data import DataError, check_data_options, check_downloadable

        if self.preset is not None:
            _preset_settings(self.preset)  # an unknown name (a RunConfig built directly) lists the valid ones
        check_data_options(self.dataset, self.data_options)
        if self.download:
            try:
                check_downloadable(self.dataset)
            except DataError as e:
                raise ConfigError(str(e), settings=("download",)) from None

    def _check_folders(self) -> None:
        """``data_root`` and ``out`` are folder names; the run folder is not something else."""
        if self.data_root is not None:
            check_folder("data_root", self.data_root, existing=False)
        check_folder("out", self.out if self.out is not None else str(self.resolved_out()))

    def _check_strength_applies(self, method) -> None:
        """A strength other than the method's own is refused for a method without one."""
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

    def _check_optimizer_applies(self, method) -> None:
        """The method trains with the optimizer (a Riemannian method brings its own: sgd or adam; muon
        needs torch's); ``muon_lr`` is given only to a Muon run."""
        method.check_optimizer(self.optimizer)
        if self.muon_lr is not None and self.optimizer != "muon":
            raise ConfigError(
                f"muon_lr applies to optimizer muon only (this run's is {self.optimizer}); got "
                f"{self.muon_lr!r}: leave it out",
                settings=("muon_lr", "optimizer"),
            )

    def check_data(self, download: bool | None = None) -> None:
        """Check, without reading it, that the data set can be found (its folder, for on-disk data sets);
        with ``download`` (default: :attr:`download`), fetch a missing CIFAR folder now.

        Raises:
            oblique.data.DataError: the data folder is not there, or cannot be downloaded."""
        from oblique.data import check_dataset

        check_dataset(self.dataset, self.data_root, download=self.download if download is None else download)

    def build_method(self):
        """The method this config names, built with its strength, targets and hyperparameters.

        Raises:
            ConfigError: ``strength`` or ``targets`` given as a hyperparameter; a bad strength, targets or
                hyperparameter (naming ``strength``, ``targets`` or ``hp``).
            oblique.methods.UnknownMethodError: an unknown method.
        """
        from oblique.methods import get_method

        # settings of their own: get_method takes them by these names
        for key in ("strength", "targets", "exclude"):
            if key in self.hp:
                raise ConfigError(
                    f"set {key} itself, not hp {key}={_short(self.hp[key], 40)}: {key} is a run setting, "
                    f"not a hyperparameter of {self.method}",
                    settings=(key, "hp"),
                )
        return get_method(
            self.method, strength=self.strength, targets=self.targets, exclude=self.exclude, **self.hp
        )

    def checked_method(self):
        """:meth:`build_method`, any other error of the method's own checks raised as a
        :class:`ConfigError` (one line)."""
        try:
            return self.build_method()
        except OptionError:  # a bad strength, targets or hyperparameter, naming its setting
            raise
        except ValueError as e:  # an unknown method (its message lists the valid ones)
            raise ConfigError(str(e)) from None

    def optimizer_config(self):
        """What the trainer asks of the optimizer (:class:`oblique.methods.base.OptimizerConfig`), from a
        resolved config; with ``optimizer muon``, Muon's learning rate and the model's recipe's optimizer for
        every parameter Muon does not step (:func:`oblique.methods.base.build_filter_muon`).

        >>> RunConfig(optimizer="muon", model="cnn").resolved().optimizer_config().others
        'adam'
        """
        from oblique.methods.base import OTHERS_OPTIMIZERS, OptimizerConfig
        from oblique.recipes import recipe_for

        muon = {}
        if self.optimizer == "muon":
            recipe = recipe_for(self.model)["optimizer"]
            muon = {"others": recipe if recipe in OTHERS_OPTIMIZERS else "sgd", "muon_lr": self.muon_lr}
        return OptimizerConfig(
            name=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            nesterov=self.nesterov,
            weight_decay=self.weight_decay,
            **muon,
        )

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def setting_kind(f) -> str:
    """What kind of value a RunConfig field holds, read from its annotation: ``"str"``, ``"int"``,
    ``"float"``, ``"bool"``, ``"floats"`` (a list of numbers) or ``"table"`` (NAME = VALUE pairs): a key
    of :data:`oblique.options.KINDS`."""
    text = str(f.type)
    for kind, marker in (
        ("table", "dict["),
        ("texts", "list[str"),
        ("floats", "list["),
        ("bool", "bool"),
        ("float", "float"),
        ("int", "int"),
    ):
        if marker in text:
            return kind
    return "str"


def _field_option(f) -> Option:
    default = f.default_factory() if f.default is MISSING else f.default
    return Option(f.name, default, f.metadata["help"], kind=setting_kind(f), **f.metadata["check"])


#: Every run setting's declaration, by name: what a valid value is (kind, choices, bounds), read from the
#: RunConfig fields.
RUN_OPTIONS: dict[str, Option] = {f.name: _field_option(f) for f in fields(RunConfig)}


def _check_kinds(cfg: RunConfig) -> None:
    """Every setting of ``cfg`` of the kind its annotation says (a TOML ``overwrite = "no"`` is refused,
    not read as true); ``None`` only where the default is ``None`` (= the recipe's or torch's)."""
    for name, option in RUN_OPTIONS.items():
        option.check_kind(getattr(cfg, name))


def _bad(setting: str, got: Any, valid: str) -> ConfigError:
    return ConfigError(f"{setting} must be {valid}; got {_short(got)}", settings=(setting,))


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
