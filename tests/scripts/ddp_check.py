"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU) by tests/test_distributed.py; writes JSON to argv[1].

1. For every method (and both Norm Loss forms and both oblique-rsgd optimizers): a few DDP steps of the
   MNIST-1D CNN in float64, each rank on its half of every global batch, against one process on the whole
   batch: the largest parameter difference, and whether the ranks hold identical parameters; and the same
   for Norm Loss with the batches in their fixed order (``batch_order = fixed``).
2. A NaN in one rank's third batch: both ranks stop, diverged at step 3 (no rank left waiting).
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as td

from oblique import list_methods
from oblique.batches import Batches
from oblique.data import TensorData
from oblique.distributed import Dist, from_env
from oblique.fit import fit
from oblique.methods import OptimizerConfig, get_method
from oblique.models import get_model

VARIANTS = [(m, {}) for m in list_methods()] + [
    ("nl", {"form": "autograd"}),
    ("oblique-rsgd", {"impl": "geoopt"}),
]
GLOBAL_BATCH, STEPS = 8, 3


def data() -> TensorData:
    g = torch.Generator().manual_seed(0)
    return TensorData(
        torch.randn(GLOBAL_BATCH * STEPS, 1, 40, generator=g, dtype=torch.float64),
        torch.randint(10, (GLOBAL_BATCH * STEPS,), generator=g),
    )


def trained(name: str, hp: dict, dist: Dist, order: str = "shuffle") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    method = get_method(name, targets="conv+linear", **hp)
    model = method.prepare(get_model("cnn", num_classes=10, in_channels=1).double())
    optimizer = method.make_optimizer(model, OptimizerConfig(lr=0.05, momentum=0.9, nesterov=True))
    forward = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model)
    batches = Batches(
        data(),
        GLOBAL_BATCH,
        generator=torch.Generator().manual_seed(1),
        drop_last=True,
        rank=dist.rank,
        world=dist.world,
        order=order,
    )
    fit(model, method, optimizer, batches, epochs=1, log_every=2, forward=forward, dist=dist)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _NaNAtThird:
    """Rank 1's batches, the third one poisoned."""

    def __init__(self, batches: Batches, rank: int):
        self.batches, self.rank = batches, rank

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for i, (x, y) in enumerate(self.batches.epoch(0)):
            yield (torch.full_like(x, float("nan")) if i == 2 and self.rank == 1 else x), y


def main() -> None:
    dist = from_env("cpu")
    out: dict = {"methods": {}}
    for name, hp, order in [(n, h, "shuffle") for n, h in VARIANTS] + [("nl", {}, "fixed")]:
        key = name + "".join(f"-{v}" for v in hp.values())
        mine = trained(name, hp, dist, order)
        everyone = dist.gather(mine)
        same_ranks = all(torch.equal(everyone[0][k], other[k]) for other in everyone[1:] for k in mine)
        if dist.main:
            alone = trained(name, hp, Dist(), order)
            diff = max((mine[k] - alone[k]).abs().max().item() for k in mine)
            result = {"max_diff": diff, "ranks_identical": same_ranks}
            if order == "shuffle":
                out["methods"][key] = result
            else:
                out["fixed_order"] = result
        td.barrier()
    torch.manual_seed(0)
    method = get_method("nl")
    model = method.prepare(get_model("cnn", num_classes=10, in_channels=1).double())
    optimizer = method.make_optimizer(model, OptimizerConfig(lr=0.05))
    from torch.nn.parallel import DistributedDataParallel

    batches = Batches(
        data(),
        GLOBAL_BATCH,
        generator=torch.Generator().manual_seed(1),
        drop_last=True,
        rank=dist.rank,
        world=dist.world,
    )
    state = fit(
        model,
        method,
        optimizer,
        _NaNAtThird(batches, dist.rank),
        epochs=1,
        log_every=2,
        forward=DistributedDataParallel(model),
        dist=dist,
    )
    diverged = dist.gather(state.diverged_step)
    if dist.main:
        out["diverged_steps"] = diverged
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    td.destroy_process_group()


if __name__ == "__main__":
    main()
    # Note [exit under torchrun] in oblique.cli: leave before the interpreter's finalization, as oblique does
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
