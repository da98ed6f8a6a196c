"""Standard training recipes per model: what ``oblique run --model M`` trains with unless told otherwise.

A setting given on the command line or in a config file always wins; a setting no recipe names takes
:data:`BASE`. The resolved values are what ``config.json`` records. Sources (docs/DESIGN.md, "Standard
recipes"):

- CIFAR ResNet-20…110 (He et al. 2016; the akamaster reproduction): SGD lr 0.1, momentum 0.9, batch 128,
  200 epochs, ×0.1 at epochs 100 and 150; ResNet-110 warms up for one epoch (upstream holds lr at 0.01
  for that epoch; here the warm-up is linear from 0 to 0.1, the one warm-up the trainer has). Their weight decay 1e-4 is the
  ``wd`` method's strength here (``--method wd --strength 5e-5`` is the same L2 term, as
  ``torch.optim.SGD(weight_decay=λ')`` adds ``λ'w`` = the gradient of ``(λ'/2)‖w‖²``).
- WRN-d-k (Zagoruyko & Komodakis 2016): SGD lr 0.1, Nesterov momentum 0.9, batch 128, 200 epochs,
  ×0.2 at epochs 60, 120, 160.
- ImageNet ResNet-50: SGD lr 0.1, momentum 0.9, batch 256, 90 epochs, ×0.1 every 30.
- MNIST-1D reference CNN (Greydanus 2020): Adam, lr 1e-2, batch 100.
- ``resnet1d`` on MNIST-1D: this project's default (README, "The default setting").
- ``transformer1d`` on MNIST-1D: no published recipe; chosen here from the baseline method at 15 epochs,
  batch 100, cosine, mean test error over seeds 0-2: Adam lr 1e-2 with a 1-epoch linear warm-up 17.4 %
  (lr 2e-2 + warm-up 18.9 %, 3e-3 + warm-up 20.4 %, 3e-3 21.2 %, 1e-2 without warm-up 23.2 %, 1e-3 31.7 %).
  It still gains with epochs (30 epochs: 10.8 / 16.8 % for seeds 0 / 1, against 12.5 / 19.7 % at 15) but
  keeps 15 to cost about what a resnet1d run costs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BASE", "RECIPES", "recipe_for"]

#: Settings for any model no recipe covers, and for settings a recipe leaves out.
BASE: dict[str, Any] = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "milestones": [0.5, 0.75],
    "gamma": 0.1,
    "warmup_epochs": 0.0,
    "epochs": 15,
    "batch_size": 100,
    "checkpoint_every": 0,  # seconds-long runs: a checkpoint only when stopped by a signal
}

_CIFAR_RESNET = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": False,
    "schedule": "multistep",
    "milestones": [100, 150],
    "gamma": 0.1,
    "epochs": 200,
    "batch_size": 128,
    "checkpoint_every": 1,
}
_WRN = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "schedule": "multistep",
    "milestones": [60, 120, 160],
    "gamma": 0.2,
    "epochs": 200,
    "batch_size": 128,
    "checkpoint_every": 1,
}

#: model name -> the settings its recipe fixes.
RECIPES: dict[str, dict[str, Any]] = {
    "resnet1d": {},  # BASE is the resnet1d recipe
    "cnn": {"optimizer": "adam", "lr": 1e-2, "schedule": "cosine", "epochs": 80, "batch_size": 100},
    "transformer1d": {
        "optimizer": "adam",
        "lr": 1e-2,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
        "epochs": 15,
        "batch_size": 100,
    },
    **{f"resnet{d}": dict(_CIFAR_RESNET) for d in (20, 32, 44, 56)},
    "resnet110": {**_CIFAR_RESNET, "warmup_epochs": 1.0},
    "wrn": _WRN,  # any WRN-d-k (model names starting with "wrn")
    "resnet50": {
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "schedule": "multistep",
        "milestones": [30, 60],
        "gamma": 0.1,
        "epochs": 90,
        "batch_size": 256,
        "checkpoint_every": 1,
    },
}


def recipe_for(model: str) -> dict[str, Any]:
    """The full recipe for ``model``: :data:`BASE` overridden by the model's own entry.

    >>> recipe_for("cnn")["optimizer"], recipe_for("wrn28-10")["gamma"]
    ('adam', 0.2)
    """
    own = RECIPES.get(model)
    if own is None and model.startswith("wrn"):
        own = RECIPES["wrn"]
    return {**BASE, **(own or {})}
