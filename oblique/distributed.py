"""One run on N processes (``torchrun --nproc_per_node=N -m oblique run ...``): the process group, which
rank writes, and what the ranks must agree on.

torchrun starts N copies of the command with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. Each process
trains on its share of every global batch (``--batch-size`` is the *global* batch), the gradients are
averaged by ``DistributedDataParallel`` during ``loss.backward()``, and every hook of the method
interface after it (the penalty's backward, Norm Loss's closed-form gradient, projections, the fused
retraction) is a deterministic function of identical weights, so the ranks stay identical. Only rank 0
writes records, shows progress, evaluates and saves. The ranks agree, at every flush point (Note
[sync-free step] in :mod:`oblique.fit`), on the loss (averaged: the global batch's), on divergence (a
non-finite loss on any rank stops every rank at the same step) and on a stop asked for by a signal
(SIGTERM from torchrun or a scheduler): no rank is ever left waiting in a collective.

A rank whose process is gone (``kill -9``, out of memory, a crash) breaks the next collective of the others
(:func:`is_peer_failure`); each rank knows every rank's machine and process (gathered once, at the start), so
a survivor can say which one of those on its machine is gone (:meth:`Dist.lost_ranks`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "from_env", "is_peer_failure"]


@dataclass
class Dist:
    """Where this process stands among the ranks of one run (``world == 1``: a single process)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # for collectives
    local_world: int = 1  #: the ranks on this machine
    peers: list[tuple[str, int]] = field(default_factory=list)  #: (machine, process id) of each rank

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this rank writes records, shows progress, evaluates and saves."""
        return self.rank == 0

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` averaged over the ranks, in place (a non-finite value anywhere makes the mean non-finite)."""
        if self.active:
            buf = t.to(self.device)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            t.copy_(buf.to(t.device) / self.world)
        return t

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def lost_ranks(self, wait_s: float = 2.0) -> list[int]:
        """The other ranks on this machine whose process is gone (a rank elsewhere cannot be looked at from
        here), waiting up to ``wait_s`` for one that is still exiting."""
        here = socket.gethostname()
        mine = [r for r, (host, _) in enumerate(self.peers) if r != self.rank and host == here]
        deadline = time.monotonic() + wait_s
        while True:
            lost = [r for r in mine if not _alive(self.peers[r][1])]
            if lost or time.monotonic() >= deadline:
                return lost
            time.sleep(0.05)


def is_peer_failure(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank is gone: torch's distributed
    errors, and gloo's, which torch raises as a plain RuntimeError naming gloo."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(w in text for w in ("gloo", "NCCL", "Connection reset"))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (of this machine) runs: a zombie (killed, not yet reaped) does not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def from_env(device_spec: str = "auto") -> Dist:
    """The ranks of this run as torchrun set them; starts the process group (gloo on the CPU, nccl on GPUs)
    the first time. A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets ``Dist()``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_spec != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    peers: list[Any] = [None] * world
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    return Dist(
        rank=rank, world=world, device=device, local_world=local_world, peers=[tuple(p) for p in peers]
    )
