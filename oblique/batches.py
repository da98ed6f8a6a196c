"""The order in which a run sees its training data: seeded, and resumable at any step.

Epoch ``e`` is a permutation of the training set drawn from the run's own generator (torch's
``RandomSampler``, so the order is the one torch's ``DataLoader(shuffle=True, generator=g)`` gives), cut
into batches. :meth:`Batches.state_dict` holds where the generator stood when the current epoch's
permutation was drawn and where it stands now, so a run stopped after any step resumes with exactly the
batches it would have seen (:meth:`Batches.epoch` with ``skip``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from oblique.data import TensorData

__all__ = ["Batches"]


class Batches:
    """The training batches of a run, epoch after epoch.

    Args:
        dataset: the training set; a :class:`~oblique.data.TensorData` hands out a whole batch in one
            indexing op, any other ``Dataset`` goes through a ``DataLoader`` (``num_workers`` workers).
        batch_size: samples per batch.
        generator: the run's data-order generator (seeded by the caller).
        drop_last: leave out the last, smaller batch of an epoch.
        num_workers: ``DataLoader`` workers for a dataset that is not in memory.

    >>> data = TensorData(torch.arange(10.0)[:, None], torch.arange(10))
    >>> b = Batches(data, 4, generator=torch.Generator().manual_seed(0), drop_last=True)
    >>> first = [y.tolist() for _, y in b.epoch(0)]
    >>> state = b.state_dict()  # stopped after epoch 0 was drawn
    >>> second = [y.tolist() for _, y in b.epoch(1)]
    >>> b.load_state_dict(state)  # resumed: epoch 0 after its first batch, then epoch 1
    >>> [y.tolist() for _, y in b.epoch(0, skip=1)] == first[1:], [y.tolist() for _, y in b.epoch(1)] == second
    (True, True)
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, generator: torch.Generator, drop_last: bool,
                 num_workers: int = 0):  # fmt: skip
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.generator, self.num_workers = generator, num_workers
        self._sampler = RandomSampler(dataset, generator=generator)
        self._epoch: int | None = None  # the epoch whose permutation was drawn last
        self._start: torch.Tensor | None = None  # the generator's state before that draw
        self._pending: tuple[int, torch.Tensor] | None = None  # from load_state_dict: redraw this epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` (counted from 0), leaving out its first ``skip``."""
        if self._pending is not None and self._pending[0] == epoch:
            self.generator.set_state(self._pending[1])  # a resumed epoch: draw its permutation again
        self._pending = None
        self._epoch, self._start = epoch, self.generator.get_state()
        order = list(BatchSampler(self._sampler, self.batch_size, self.drop_last))[skip:]
        if isinstance(self.dataset, TensorData):
            return (self.dataset[idx] for idx in order)
        return iter(DataLoader(self.dataset, batch_sampler=order, num_workers=self.num_workers))

    def state_dict(self) -> dict:
        """Where the data order stands (tensors and plain values only)."""
        return {"epoch": self._epoch, "start": self._start, "now": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next :meth:`epoch` call for the epoch in progress then (or the
        one after it) gives the batches an uninterrupted run would have seen."""
        self.generator.set_state(state["now"])
        self._pending = (state["epoch"], state["start"]) if state["epoch"] is not None else None
