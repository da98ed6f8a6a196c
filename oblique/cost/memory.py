"""The peak memory of one training step of a benched method (the record's ``peak_mem_mb``).

What a method keeps between steps is counted with the step (:func:`persistent_tensors`): the model's
parameters and buffers, the optimizer's state, and the *workspaces* — every tensor the method object or the
optimizer holds beyond those (the fused optimizer's gathered buffers, :meth:`oblique.optim.ObliqueSGD.workspace_tensors`;
the fused Norm Loss's norms and coefficients, :meth:`oblique.methods.norm_loss.FusedNormLossGrad.workspace_tensors`;
SRIP's power-iteration vectors; a last value kept on the device). Each storage is counted once, however
many views of it there are and in however many of these places it appears.

On CUDA, the peak of ``torch.cuda.max_memory_allocated`` during one step, less what was allocated before
it (every method's models, the batch), plus what this method held before the step (its persistent
tensors, collected *before* the step: a workspace the step creates is in the allocator's peak, one it
finds is not, so none is counted twice). A fresh method is stepped once first: its first step builds the
workspaces after that step's peak, where the next step holds them throughout.

On the CPU no allocator statistic sees torch, so the step is accounted for instead (:func:`memory_account`):
the bytes it holds at the start of backward — the persistent tensors above (collected after the step) +
gradients + every tensor autograd saved for backward (activations, and a reparametrization's computed
weights), each storage counted once. Temporaries of single operations are not counted.

Both run the step the bench times (:meth:`oblique.cost.entries.Entry.run_step`, i.e.
:func:`oblique.methods.base.training_step`), without recording its time.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from oblique.cost.entries import Entry

__all__ = ["ACCOUNT_PARTS", "memory_account", "peak_mem_mb", "persistent_tensors"]

#: the parts of the CPU account, in the order a storage is attributed (the first part it appears in)
ACCOUNT_PARTS = ("parameters", "optimizer_state", "workspaces", "gradients", "saved_for_backward")

#: how deep :func:`persistent_tensors` looks into objects held by objects
_MAX_DEPTH = 8


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    """(where the tensor's storage starts, its size in bytes): tensors sharing a storage share the key."""
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensor types
        return id(t), t.numel() * t.element_size()


class _Storages:
    """Storages seen so far, each counted once, attributed to the first part that brought it."""

    def __init__(self) -> None:
        self.size: dict[int, int] = {}
        self.part: dict[int, str] = {}

    def add(self, part: str, tensors: Iterable[Any]) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor):
                ptr, n = _storage_key(t)
                self.part.setdefault(ptr, part)
                self.size[ptr] = max(self.size.get(ptr, 0), n)

    def bytes(self, part: str | None = None) -> int:
        return sum(n for ptr, n in self.size.items() if part is None or self.part[ptr] == part)


def _opt_state_tensors(opt: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                yield v


#: what :func:`persistent_tensors` does not look into: a module's tensors are the model's (counted as
#: parameters and buffers), code holds none of a step's data
_OPAQUE = (nn.Module, type, types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.ModuleType)


def persistent_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor ``obj`` (a method, an optimizer) keeps between steps, found without a table of methods.

    An object with a ``workspace_tensors()`` method declares its own (:class:`oblique.optim.ObliqueSGD`,
    :class:`oblique.methods.norm_loss.FusedNormLossGrad`); any other object is looked into: its attributes,
    and the items of its lists, tuples, sets and dicts, a few levels deep. Modules (the model, a manifold),
    code and weak references are not followed. Tensors may repeat and share storages (views of a buffer, a
    parameter in the optimizer's groups): the account counts each storage once.

    >>> class Holder:
    ...     def __init__(self):
    ...         self.cache = {"v": torch.zeros(3)}
    >>> [t.shape for t in persistent_tensors(Holder())]
    [torch.Size([3])]
    """
    seen: set[int] = set()

    def walk(o: Any, depth: int) -> Iterator[torch.Tensor]:
        if isinstance(o, torch.Tensor):
            yield o
            return
        if depth > _MAX_DEPTH or id(o) in seen or isinstance(o, (*_OPAQUE, str, bytes, int, float)):
            return
        seen.add(id(o))
        declared = getattr(o, "workspace_tensors", None)
        if callable(declared):
            yield from declared()
            if not isinstance(o, torch.optim.Optimizer):
                return  # an optimizer's state and groups are looked into as well (below)
        if isinstance(o, dict):
            items: Iterable[Any] = [*o.keys(), *o.values()]
        elif isinstance(o, list | tuple | set | frozenset):
            items = o
        else:
            items = getattr(o, "__dict__", {}).values()
        for item in items:
            yield from walk(item, depth + 1)

    yield from walk(obj, 0)


def _kept(entry: Entry) -> _Storages:
    """The storages ``entry`` keeps between steps, by part: parameters and buffers, optimizer state,
    workspaces (:func:`persistent_tensors` of the method and of the optimizer)."""
    seen = _Storages()
    seen.add("parameters", [*entry.model.parameters(), *entry.model.buffers()])
    seen.add("optimizer_state", _opt_state_tensors(entry.opt))
    seen.add("workspaces", persistent_tensors(entry.method))
    seen.add("workspaces", persistent_tensors(entry.opt))
    return seen


def memory_account(entry: Entry) -> dict[str, int]:
    """Runs one step of ``entry`` and accounts for it on the CPU (the module docstring): bytes per part of
    :data:`ACCOUNT_PARTS`, each storage counted once (in the first part it appears in), and ``"total"``."""
    entry.opt.zero_grad(set_to_none=True)
    params = list(entry.model.parameters())
    param_ptrs = {_storage_key(p)[0] for p in params}
    saved: list[torch.Tensor] = []  # kept alive to the end, so that no later tensor reuses their memory

    def pack(t: torch.Tensor) -> torch.Tensor:
        if _storage_key(t)[0] not in param_ptrs:
            saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        entry.run_step()
    seen = _kept(entry)
    seen.add("gradients", (p.grad for p in params))
    seen.add("saved_for_backward", saved)
    return {**{part: seen.bytes(part) for part in ACCOUNT_PARTS}, "total": seen.bytes()}


def _own_bytes(entry: Entry) -> int:
    """What ``entry`` keeps between steps: parameters, buffers, optimizer state, workspaces (once each)."""
    return _kept(entry).bytes()


def _cuda_peak_mb(entry: Entry, device: torch.device) -> float:
    if entry.step_no == 0:  # a fresh entry builds its workspaces in its first step, after that step's peak
        entry.run_step()
    entry.opt.zero_grad(set_to_none=True)
    own = _own_bytes(entry)  # before the step: what the step creates is in the peak below
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    entry.run_step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device)
    return (peak - base + own) / 2**20


def peak_mem_mb(entry: Entry, device: torch.device) -> float:
    """MiB one training step of ``entry`` holds at its peak (see the module docstring); runs one step."""
    if device.type == "cuda":
        return _cuda_peak_mb(entry, device)
    return memory_account(entry)["total"] / 2**20
