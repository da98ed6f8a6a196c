"""The peak memory of one training step of a benched method (the record's ``peak_mem_mb``).

On CUDA, the peak of ``torch.cuda.max_memory_allocated`` during one step, less what the other methods'
models hold (the allocator is shared), plus what this method's own parameters and optimizer state hold.

On the CPU no allocator statistic sees torch, so the step is accounted for instead: the bytes it holds at
the start of backward — parameters + gradients + optimizer state + every tensor autograd saved for
backward (activations, and a reparametrization's computed weights) — each storage counted once.
Temporaries of single operations are not counted.

Both run the step the bench times (:meth:`oblique.cost.entries.Entry.run_step`, i.e.
:func:`oblique.methods.base.training_step`), without recording its time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from oblique.cost.entries import Entry

__all__ = ["peak_mem_mb"]


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    """(where the tensor's storage starts, its size in bytes): tensors sharing a storage share the key."""
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensor types
        return id(t), t.numel() * t.element_size()


def _tensor_bytes(tensors: Iterable) -> int:
    """The bytes of the storages behind ``tensors`` (non-tensors skipped), each storage counted once."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            ptr, n = _storage_key(t)
            seen[ptr] = max(seen.get(ptr, 0), n)
    return sum(seen.values())


def _opt_state_tensors(opt: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                yield v


def _cuda_peak_mb(entry: Entry, device: torch.device) -> float:
    own = _tensor_bytes(list(entry.model.parameters()) + list(_opt_state_tensors(entry.opt)))
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    entry.run_step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device)
    return (peak - base + own) / 2**20


def _cpu_account_mb(entry: Entry) -> float:
    params = list(entry.model.parameters())
    param_ptrs = {_storage_key(p)[0] for p in params}
    saved: dict[int, int] = {}
    held: list[torch.Tensor] = []  # kept alive to the end, so that no later tensor reuses their memory

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, n = _storage_key(t)
        if ptr not in param_ptrs:
            saved[ptr] = max(saved.get(ptr, 0), n)
            held.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        entry.run_step()
    grads = [p.grad for p in params if p.grad is not None]
    state = _tensor_bytes(params) + _tensor_bytes(grads) + _tensor_bytes(_opt_state_tensors(entry.opt))
    return (state + sum(saved.values())) / 2**20


def peak_mem_mb(entry: Entry, device: torch.device) -> float:
    """MiB one training step of ``entry`` holds at its peak (see the module docstring); runs one step."""
    entry.opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        return _cuda_peak_mb(entry, device)
    return _cpu_account_mb(entry)
