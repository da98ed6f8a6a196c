"""The order in which a run sees its training data: seeded, and resumable at any step.

Two orders (:data:`ORDERS`, the run setting ``batch_order``):

``shuffle`` (the default)
    Epoch ``e`` is a permutation of the training set drawn from the run's own generator, cut into
    batches: on the CPU torch's ``RandomSampler`` (the order torch's ``DataLoader(shuffle=True,
    generator=g)`` gives); for an in-memory data set held on a GPU, ``torch.randperm`` on the GPU with a
    GPU generator, so that a batch is cut there and nothing waits for the device.
``fixed``
    Every epoch the training set in its stored order, cut into the same batches: batch ``k`` of every
    epoch is samples ``k·B … k·B + B − 1``. This is the loop of the MNIST-1D package's notebooks
    (greydanus/mnist1d/notebooks/train.py: step ``t`` trains on ``x[(t·B) mod n : (t·B) mod n + B]``)
    whenever ``B`` divides ``n`` (its 4000 samples in batches of 100). Where it does not, upstream keeps
    the short slice at the end of the set and its next batch starts at ``(t·B) mod n``, not at 0, so its
    batches drift across epochs; here every epoch starts at sample 0 and the last, smaller batch is kept
    or dropped as ``drop_last`` says. The generator is not drawn from.

A data set read from disk goes through a ``DataLoader`` with worker processes (seeded from the run's
generator) and pinned memory. :meth:`Batches.state_dict` holds where the generator stood when the current
epoch's permutation was drawn and where it stands now, so a run stopped after any step resumes with exactly
the batches it would have seen (:meth:`Batches.epoch` with ``skip``), in either order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from oblique.data import TensorData

__all__ = ["ORDERS", "Batches"]

#: The orders a run may take its batches in (module docstring): a new permutation every epoch, or the
#: stored order every epoch.
ORDERS = ("shuffle", "fixed")


class Batches:
    """The training batches of a run, epoch after epoch.

    Args:
        dataset: the training set; a :class:`~oblique.data.TensorData` hands out a whole batch in one
            indexing op, any other ``Dataset`` goes through a ``DataLoader`` (``num_workers`` workers).
        batch_size: samples per batch.
        generator: the run's data-order generator (seeded by the caller).
        drop_last: leave out the last, smaller batch of an epoch.
        num_workers: ``DataLoader`` workers for a dataset that is not in memory.
        pin_memory: pin the batches of such a data set (for a non-blocking copy to the GPU).
        rank, world: this process and the number of processes of a run on several (``torchrun``): every
            process draws the same permutation and takes its ``1/world`` of each global batch, so together
            they see what a single process sees (``batch_size`` is the global batch).
        order: ``"shuffle"`` (a permutation per epoch) or ``"fixed"`` (the stored order every epoch); see
            the module docstring.

    >>> data = TensorData(torch.arange(10.0)[:, None], torch.arange(10))
    >>> b = Batches(data, 4, generator=torch.Generator().manual_seed(0), drop_last=True)
    >>> first = [y.tolist() for _, y in b.epoch(0)]
    >>> state = b.state_dict()  # stopped after epoch 0 was drawn
    >>> second = [y.tolist() for _, y in b.epoch(1)]
    >>> b.load_state_dict(state)  # resumed: epoch 0 after its first batch, then epoch 1
    >>> [y.tolist() for _, y in b.epoch(0, skip=1)] == first[1:], [y.tolist() for _, y in b.epoch(1)] == second
    (True, True)
    >>> fixed = Batches(data, 4, generator=torch.Generator(), drop_last=False, order="fixed")
    >>> [y.tolist() for _, y in fixed.epoch(0)] == [y.tolist() for _, y in fixed.epoch(1)] == [
    ...     [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    True
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        generator: torch.Generator,
        drop_last: bool,
        num_workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world: int = 1,
        order: str = "shuffle",
    ):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
        self.order = order
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.generator, self.num_workers, self.pin_memory = generator, num_workers, pin_memory
        self.rank, self.world = rank, world  # this process's share of every (global) batch
        self._sampler = (
            RandomSampler(dataset, generator=generator) if order == "shuffle" else SequentialSampler(dataset)
        )
        self._epoch: int | None = None  # the epoch whose permutation was drawn last
        self._start: torch.Tensor | None = None  # the generator's state before that draw
        self._pending: tuple[int, torch.Tensor] | None = None  # from load_state_dict: redraw this epoch
        self._order: list[list[int]] = []  # the batches of the current epoch (data read from disk)
        self._disk: DataLoader | None = None

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` (counted from 0), leaving out its first ``skip``."""
        if self._pending is not None and self._pending[0] == epoch:
            self.generator.set_state(self._pending[1])  # a resumed epoch: draw its permutation again
        self._pending = None
        self._epoch, self._start = epoch, self.generator.get_state()
        if self._on_device:  # a permutation drawn and cut on the device: nothing waits for it
            n, bs = len(self.dataset), self.batch_size
            dev = self.generator.device
            perm = (
                torch.randperm(n, generator=self.generator, device=dev)
                if self.order == "shuffle"
                else torch.arange(n, device=dev)
            )
            order = list(perm[: len(self) * bs].view(-1, bs) if self.drop_last else perm.split(bs))[skip:]
            return (self.dataset[self._share(idx)] for idx in order)
        order = [self._share(idx) for idx in BatchSampler(self._sampler, self.batch_size, self.drop_last)][
            skip:
        ]
        if isinstance(self.dataset, TensorData):
            return (self.dataset[idx] for idx in order)
        self._order[:] = order  # in place: the loader iterates this list anew every epoch
        if self._disk is None:  # one loader for the whole run: its workers persist across epochs
            workers = self.num_workers
            self._disk = DataLoader(
                self.dataset,
                batch_sampler=self._order,
                num_workers=workers,
                pin_memory=self.pin_memory,
                persistent_workers=workers > 0,
                worker_init_fn=_seed_worker,
            )
        return iter(self._disk)

    def _share(self, idx):
        """This rank's part of a global batch (all of it in a single process)."""
        if self.world == 1:
            return idx
        part = len(idx) // self.world
        return idx[self.rank * part : (self.rank + 1) * part]

    @property
    def _on_device(self) -> bool:
        return isinstance(self.dataset, TensorData) and self.generator.device.type != "cpu"

    @property
    def _augmentation(self) -> torch.Generator | None:
        return getattr(getattr(self.dataset, "transform", None), "generator", None)

    def state_dict(self) -> dict:
        """Where the data order (and the augmentation's own generator) stands: tensors and plain values."""
        aug = self._augmentation
        return {
            "epoch": self._epoch,
            "start": self._start,
            "now": self.generator.get_state(),
            "augment": aug.get_state() if aug is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next :meth:`epoch` call for the epoch in progress then (or the
        one after it) gives the batches an uninterrupted run would have seen."""
        self.generator.set_state(state["now"])
        self._pending = (state["epoch"], state["start"]) if state["epoch"] is not None else None
        if state.get("augment") is not None and self._augmentation is not None:
            self._augmentation.set_state(state["augment"])


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and Python in a loader worker from the seed torch gave it (torch seeds its own)."""
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - what third-party transforms draw from
    random.seed(seed)
