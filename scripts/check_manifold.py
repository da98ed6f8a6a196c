"""Which settings put each hard method on its manifold, as ``method.check`` measures it (README, "Drift from
the manifold"): every method with a promise, at the settings named, on a freshly built model, right after
``prepare``.

    python scripts/check_manifold.py [MODEL]        # default resnet1d; any registered model name
"""

from __future__ import annotations

import sys

import torch

import oblique
from oblique.models import get_model, input_shape

SETTINGS = [
    ("wn", {"g": "frozen"}),
    ("pbwn", {}),
    ("oblique-rsgd", {}),
    ("olm", {}),
    ("olm", {"scale": 1.0}),
    ("oni", {}),
    ("oni", {"scale": 1.0}),
    ("oni", {"scale": 1.0, "iters": 10}),
    ("oni", {"scale": 1.0, "iters": 15}),
]


def main(model_name: str = "resnet1d") -> None:
    for name, hp in SETTINGS:
        torch.manual_seed(0)
        method = oblique.get_method(name, **hp)
        model = method.prepare(get_model(model_name, in_channels=input_shape(model_name)[0]))
        ok, reason = method.check(model)
        given = " ".join(
            f"--hp {k}={v:g}" if isinstance(v, float) else f"--hp {k}={v}" for k, v in hp.items()
        )
        print(f"{'ok ' if ok else 'OFF'}  {name} {given or '(defaults)'}: {reason}")


if __name__ == "__main__":
    main(*sys.argv[1:])
