"""Presets: the published settings this toolkit reproduces, by name (``oblique run --preset NAME``).

A preset is a set of run settings (:class:`oblique.config.RunConfig` fields) and the source it follows. It
holds only what differs from the run defaults and from the model's standard recipe (:mod:`oblique.recipes`,
which already holds the CIFAR, WRN, ResNet-50 and MNIST-1D CNN recipes): the data set, the model, the data
options, and the recipe values the source sets otherwise. Settings are laid in this order, each over the
one before: RunConfig defaults and the model's recipe < the preset < a config file < the flags
(:func:`oblique.config.settings_from`); ``config.json`` records the preset's name and every value.

A preset never sets the method, its strength or the seed: those are what a comparison varies (a study's
grid variables). Where the source's own regularizer is weight decay, its value is said in
:attr:`Preset.notes` as the ``wd`` method's strength (``torch.optim.SGD(weight_decay=λ')`` is the gradient
of ``(λ'/2)‖w‖²``: ``--method wd --strength λ'/2``).

>>> list_presets()[-1], get_preset("mnist1d-paper").settings["epochs"]
('mnist1d-paper', 150)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oblique.errors import ObliqueError

__all__ = ["PRESETS", "Preset", "PresetError", "get_preset", "list_presets", "preset_settings"]


class PresetError(ObliqueError, ValueError):
    """An unknown preset name; the message lists the valid ones."""


@dataclass(frozen=True)
class Preset:
    """One named setting.

    Attributes:
        name: what ``--preset`` takes.
        summary: one line: what it trains.
        source: the paper and the repository whose setting it is, with their published result.
        settings: RunConfig fields -> values; only what differs from the defaults and the model's recipe.
        notes: where this toolkit's run differs from the source, and how to get the rest of it.
    """

    name: str
    summary: str
    source: str
    settings: Mapping[str, Any]
    notes: str = ""


_CIFAR_NOTES = (
    "their weight decay {wd} on every weight is --method wd --strength {half} here (the method under study "
    "is the regularizer; the optimizer's weight_decay acts on untargeted parameters only, 0 by default)"
)
_HE = (
    "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (sec. 4.2); the recipe as in the "
    "akamaster/pytorch_resnet_cifar10 reproduction: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, "
    "200 epochs, x0.1 at epochs 100 and 150, ResNet-110 warmed up for one epoch"
)
_HE_NOTES = (
    _CIFAR_NOTES.format(wd="1e-4", half="5e-5")
    + "; the warm-up rises linearly from 0 to 0.1 over one epoch (upstream holds 0.01 for it)"
)
_WRN = (
    "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016; szagoruyko/wide-residual-networks: SGD "
    "lr 0.1, Nesterov momentum 0.9, weight decay 5e-4, batch 128, 200 epochs, x0.2 at epochs 60, 120, 160"
)
_WRN_NOTES = (
    _CIFAR_NOTES.format(wd="5e-4", half="2.5e-4")
    + "; no dropout (--model wrn28-10-drop: dropout 0.3, the paper's better row)"
)


def _cifar(dataset: str, model: str) -> dict[str, Any]:
    return {"dataset": dataset, "model": model, "data_options": {"augment": True}}


#: name -> preset, in the order ``oblique presets`` lists them.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "cifar10-resnet110",
            "ResNet-110 on CIFAR-10, standard augmentation (pad 4, crop, flip)",
            _HE + "; error 6.43 % (paper) / 6.32 % (reproduction)",
            _cifar("cifar10", "resnet110"),
            _HE_NOTES,
        ),
        Preset(
            "cifar100-resnet110",
            "ResNet-110 on CIFAR-100, standard augmentation",
            _HE + " (the paper reports CIFAR-10 only; the Norm Loss paper's CIFAR-100 weight decay baseline "
            "with this recipe: 27.9 % error)",
            _cifar("cifar100", "resnet110"),
            _HE_NOTES,
        ),
        Preset(
            "cifar10-wrn28-10",
            "WRN-28-10 on CIFAR-10, standard augmentation",
            _WRN + "; error 4.00 % (3.89 % with dropout 0.3)",
            _cifar("cifar10", "wrn28-10"),
            _WRN_NOTES,
        ),
        Preset(
            "cifar100-wrn28-10",
            "WRN-28-10 on CIFAR-100, standard augmentation",
            _WRN + "; error 19.25 % (18.85 % with dropout 0.3)",
            _cifar("cifar100", "wrn28-10"),
            _WRN_NOTES,
        ),
        Preset(
            "imagenet-resnet50",
            "ResNet-50 on ImageNet (an ImageFolder tree), 224 px random-resized crops and flips",
            "He et al., CVPR 2016; the recipe of Goyal et al., Accurate, Large Minibatch SGD (2017) at batch "
            "256 and of torchvision's reference scripts (pytorch/vision references/classification): SGD lr "
            "0.1, momentum 0.9, weight decay 1e-4, batch 256, 90 epochs, x0.1 at epochs 30 and 60; top-1 "
            "error 23.87 % (torchvision's ResNet50_Weights.IMAGENET1K_V1, trained with this recipe)",
            {"dataset": "imagenet", "model": "resnet50", "data_options": {"image_size": 224}},
            _CIFAR_NOTES.format(wd="1e-4", half="5e-5")
            + "; ONI upstream uses 2 Newton iterations on ResNet-50 (--hp iters=2); give the folder with "
            "--data-root, and decoding workers with --data-workers",
        ),
        Preset(
            "mnist1d-paper",
            "MNIST-1D as the paper generates it, with the paper's reference CNN and its recipe",
            "Greydanus, Scaling Down Deep Learning (2020, arXiv 2011.14439; greydanus/mnist1d): the mnist1d "
            "package's own generation (get_dataset_args: 5000 samples, 4000 train / 1000 test, shear 0.75, "
            "scale 0.4, seed 42) and its reference CNN recipe: three Conv1d of 25 channels, Adam lr 1e-2 at a "
            "constant rate, no weight decay, batch 100 taken in order (the same 40 batches every pass), 6000 "
            "steps (= 150 epochs of 40 batches); published CNN test accuracy 94 %; the notebooks' logs of this "
            "recipe (seed 42): 92.5 % (2020) and 92.3 % (2024) at step 6000, 93.4 % at step 3000 (2020)",
            {
                "dataset": "mnist1d",
                "model": "cnn",
                "schedule": "constant",
                "epochs": 150,
                "batch_order": "fixed",
                "data_options": {
                    "num_samples": 5000,
                    "train_split": 0.8,
                    "shear_scale": 0.75,
                    "scale_coeff": 0.4,
                    "seed": 42,
                },
            },
            "the paper's unregularized CNN is --method baseline; the repository's train.py defaults to 8000 "
            "steps (--epochs 200), and its loop takes one update more than it is given steps (6001 for "
            "6000); --batch-order shuffle reshuffles the batches every epoch instead",
        ),
    )
}


def list_presets() -> list[str]:
    """Names of every preset, in the order ``oblique presets`` lists them."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset ``name``.

    Raises:
        PresetError: an unknown name (the message lists the valid ones).
    """
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise PresetError(
            f"unknown preset {name!r:.80}; valid: {', '.join(PRESETS)}", settings=("preset",)
        ) from None


def preset_settings(name: str) -> dict[str, Any]:
    """A copy of the settings of preset ``name`` (the caller may change it).

    >>> preset_settings("cifar10-wrn28-10")
    {'dataset': 'cifar10', 'model': 'wrn28-10', 'data_options': {'augment': True}}
    """
    return copy.deepcopy(dict(get_preset(name).settings))
