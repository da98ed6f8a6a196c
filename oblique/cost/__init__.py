"""What each method costs, measured side by side: ``oblique bench``.

For every method, one full training step — forward, loss, penalty, backward, ``before_step``, optimizer
step, ``after_step`` — on synthetic inputs of the model's shape. Every method has its own prepared copy of
the model (same seed, same initialization, same batch). After ``warmup`` rounds, ``rounds`` rounds run,
each stepping every method once in a fresh random order, so drift of the machine (other processes, clock
changes, a warming cache) falls on all methods alike. Every round also steps the baseline a second time,
on a copy of its own: the A/A control, the bench's own bias and noise (Note [noise floor] in
:mod:`oblique.cost.targets`). The clock is the project's one (:class:`oblique.clock.Clock`): CUDA segments
are timed with events, then synchronized; CPU segments with ``time.perf_counter``. On CUDA the bench runs
with cuDNN autotuning on, as ``oblique run`` trains there. Progress goes to stderr through
:func:`oblique.progress.progress` (a bar on a terminal, a plain line now and then in a log).

Per method (the record's ``methods`` table):

- ``step_ms``: median over rounds of the whole step.
- ``overhead_pct``: median over rounds of the *paired* difference ``step(method) − step(baseline)`` of the
  same round, in % of the median baseline step (the pairing cancels drift between rounds; a median of
  differences is far less noisy than a difference of medians).
- ``overhead_pct_se``: the standard error of that median (``1.2533·σ/√rounds``, σ from the interquartile
  range so that a few rounds slowed by other processes do not dominate): on a busy machine it can
  exceed a small method's true overhead, which ``regularizer_pct`` then measures better.
- ``overhead_resolved``: whether ``|overhead_pct|`` exceeds the A/A floor (the record's ``aa``); None for
  the baseline.
- ``regularizer_ms``: the regularizer's own time, isolated, the sum of ``regularizer_parts``
  (``regularizer_pct``: the same in % of the median baseline step):

  - ``in_step_ms``: penalty + its backward + ``before_step`` + ``after_step`` inside the step (soft
    methods; Norm Loss's fused closed form is ``before_step``; projections are ``after_step``);
  - ``reparam_ms`` (reparametrizations): the parametrization's forward and backward alone — every
    targeted ``module.weight`` computed from its parameters and back-propagated with a unit gradient,
    repeated ``micro_repeats`` times, interleaved across methods;
  - ``optimizer_extra_ms`` (Riemannian methods): the method's optimizer step minus a ``torch.optim.SGD``
    step (same momentum, Nesterov) on tensors of the same shapes, both medians of ``micro_repeats``
    interleaved repeats.

- ``peak_mem_mb``: what the method keeps between steps — parameters and buffers, optimizer state, and
  its workspaces (every tensor the method object or the optimizer holds beyond those: the fused
  optimizer's gathered buffers, the fused Norm Loss's norms, SRIP's vectors;
  :func:`oblique.cost.memory.persistent_tensors`) — plus, on CUDA, the peak of
  ``torch.cuda.max_memory_allocated`` during one step above what was allocated before it; on the CPU
  (where no allocator statistic sees torch), what a step holds at the start of backward: gradients and
  every tensor autograd saved for backward (activations, and a reparametrization's computed weights).
  Each storage counted once; temporaries of single operations are not counted.
- ``analytic_flops``: ``method.analytic_flops(model)``, the regularizer's floating-point operations per
  step counted from the shapes (0 for baseline).
- ``cost_note``: where the cost goes: ``method.describe_cost()`` (the method class's ``cost_note``,
  formatted with its hyperparameters, else a note of its kind).

The targets, measured in the same process, interleaved, medians of ``micro_repeats``
(:mod:`oblique.cost.targets`): each method may declare one (its class's ``cost_target``; all of them:
:func:`declared_targets`), and every declared target that applies to a benched method is measured —
Norm Loss's fused closed form against the memory-traffic floor of one ``torch._foreach_norm`` and against
every other method's overhead, ``oblique-rsgd``'s fused optimizer step against geoopt's, and each batched
form (e.g. ``oni``, ``so``) for its step overhead and against its per-layer reference
(``batched=false``) in isolated regularizer time.

Every target was defined on the CPU: measured on a GPU, it keeps its measurement but gets no verdict
(``holds: null``, ``defined_on: "cpu"``; printed "target defined on the CPU; informative here": Note
[targets' device] in :mod:`oblique.cost.targets`).

Record format (``schema`` ``"oblique.bench/2"``), one JSON object per bench of one model::

    {"schema": "oblique.bench/2", "model": "resnet110", "depth": 110, "width": null,
     "num_params": 1727962, "num_target_params": 1719216, "input_shape": [3, 32, 32],
     "batch_size": 32, "device": "auto", "device_used": "cuda:0", "device_type": "cuda",
     "device_name": "NVIDIA H100 80GB HBM3",
     "environment": {"torch": "...", "cuda": "12.4", "cudnn": 90100, "device_name": "...",
                     "tf32_matmul": false, "tf32_cudnn": true, "cudnn_benchmark": true,
                     "deterministic_algorithms": false},
     "threads": 2, "rounds": 25, "warmup": 2, "micro_repeats": 40,
     "torch_version": "...", "seconds": 412.3,
     "aa": {"step_ms": ..., "overhead_pct": 0.2, "overhead_pct_se": 0.4, "floor_pct": 1.0},
     "methods": {"baseline": {"kind": "none", "step_ms": ..., "step_ms_q25": ..., "step_ms_q75": ...,
                              "overhead_pct": 0.0, "overhead_pct_se": 0.0, "overhead_resolved": null,
                              "regularizer_ms": ..., "regularizer_parts": {...},
                              "peak_mem_mb": ..., "analytic_flops": 0.0, "cost_note": "..."}, ...},
     "errors": {"method": "why it could not be benched"},
     "targets": {"nl": {"figure": "...", "ratio_to_foreach_norm": 2.1, "overhead_pct": 0.1,
                        "vs": {"wd": 0.4, ...}, "lowest_overhead": false, "tied_with": ["wd", ...],
                        "resolvably_lower": [], "holds": true},
                 "oblique-rsgd": {"figure": "...", "speedup": 3.4, "fused_ms": ..., "geoopt_ms": ...,
                                  "holds": true},
                 "oni": {"figure": "...", "batched_ms": ..., "per_layer_ms": ..., "speedup": 4.1,
                         "speedup_q1": 3.8, "speedup_q3": 4.4, "overhead_pct": 9.0,
                         "overhead_resolved": true, "holds": true}, ...}}

(every target also has ``"defined_on": "cpu"``; ``holds`` is null when it was measured elsewhere.)

``device`` is the device as asked (``"auto"``, ``"cuda"``, ``"cuda:1"``, ``"cpu"``); ``device_used`` the one
used, ``device_type`` its type and ``device_name`` the card (``"cpu"`` on the CPU): what a resumed sweep
compares (:mod:`oblique.cost.sweep`). Records of schema ``oblique.bench/1`` have one ``device``, the device
used with the card's name (``"cpu"``, ``"cuda:0 (NVIDIA H100)"``), and no ``environment``; records written
before the A/A control existed have no ``aa`` and no ``overhead_resolved``. All of them read back
(:func:`read_bench`) and print (:func:`format_table`) all the same: :func:`oblique.cost.record.device_of`
and :func:`~oblique.cost.record.device_label` read the device of either schema.

The CSV (``--csv``, and ``bench.csv`` of a sweep) has one row per model and method with the columns
:data:`CSV_COLUMNS`. :func:`read_bench` reads either form, or a sweep folder, into one pandas DataFrame of
those columns — the input of the cost figures.

The package, one module per phase (each imports only those above it):

- :mod:`~oblique.cost.timing`: timing one call with the clock, and the statistics of samples;
- :mod:`~oblique.cost.entries`: one method with its own prepared model, optimizer and batch, and its
  isolated parts;
- :mod:`~oblique.cost.memory`: the peak memory of one step, workspaces included;
- :mod:`~oblique.cost.targets`: the targets and the A/A floor, measured and evaluated;
- :mod:`~oblique.cost.record`: the record's schema, the printed table, the CSV, the reader;
- :mod:`~oblique.cost.bench`: :class:`BenchConfig` (every setting, validated) and :func:`bench`;
- :mod:`~oblique.cost.sweep`: the width and depth sweeps into a folder.

The command ``oblique bench`` (its flags, the printing) is :mod:`oblique.cli.bench`; this package never
imports the command line.
"""

from oblique.cost.bench import MAX_ROUNDS, MIN_ROUNDS, BenchConfig, BenchError, bench, resolve_methods
from oblique.cost.record import (
    CSV_COLUMNS,
    SCHEMA,
    SCHEMAS,
    device_label,
    device_of,
    format_table,
    read_bench,
    write_csv,
)
from oblique.cost.sweep import SWEEPS, run_sweep
from oblique.cost.targets import TARGETS_DEFINED_ON, declared_targets

__all__ = [
    "CSV_COLUMNS",
    "MAX_ROUNDS",
    "MIN_ROUNDS",
    "SCHEMA",
    "SCHEMAS",
    "SWEEPS",
    "TARGETS_DEFINED_ON",
    "BenchConfig",
    "BenchError",
    "bench",
    "declared_targets",
    "device_label",
    "device_of",
    "format_table",
    "read_bench",
    "resolve_methods",
    "run_sweep",
    "write_csv",
]
