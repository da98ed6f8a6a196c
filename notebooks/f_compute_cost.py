# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # (f) Compute cost
#
# The poster claims Norm Loss has "negligible overhead" and a lower complexity than most weight
# regularization methods. Every run records its training wall time and the time spent in the regularizer's
# own hooks (`regularizer_time_s`: the penalty and its backward, the closed-form gradient, projections).
# Reparametrizations (wn, oni, olm) pay inside the forward and backward pass instead; `oblique bench`
# isolates that cost over model sizes, and `oblique plot STUDY --bench RECORDS` adds it to figure 5.

# %% tags=["parameters"]
# Parameters. SIZE = "small" runs top to bottom in well under a minute on 2 CPU cores (the test suite runs
# it); SIZE = "full" is the study the text below talks about (minutes to an hour on 2 cores).
import os

SIZE = os.environ.get("OBLIQUE_NB_SIZE", "small")
OUT = os.environ.get("OBLIQUE_NB_OUT", "studies/notebooks")  # study folders go under here
WORKERS = 0 if SIZE == "small" else 2  # 0: train in this kernel; N: N worker processes
THREADS = 1 if SIZE == "small" else None  # torch threads per run; None: the default for WORKERS
assert SIZE in ("small", "full"), f"SIZE must be 'small' or 'full'; got {SIZE!r}"

# %%
import oblique
from analysis.notebook import show, study
from oblique.study import StudySpec, results_frame

# %%
EPOCHS = 1 if SIZE == "small" else 5
SEEDS = [0] if SIZE == "small" else [0, 1, 2]
s = study(
    f"{OUT}/cost",
    StudySpec(methods=oblique.list_methods(), seeds=SEEDS, base={"epochs": EPOCHS}),
    workers=WORKERS,
    threads=THREADS,
)

# %%
r = results_frame(s)
r["ms_per_step"] = 1e3 * r["train_time_s"] / r["steps"].astype(float)
r["regularizer_share_%"] = 100 * r["regularizer_time_s"] / r["train_time_s"]
base = r[r["method"] == "baseline"]["ms_per_step"].mean()
r["overhead_vs_baseline_%"] = 100 * (r["ms_per_step"] / base - 1)
r.groupby("method", sort=False)[
    ["ms_per_step", "regularizer_share_%", "overhead_vs_baseline_%"]
].mean().round(2)

# %%
from analysis.figures import fig_cost

show(fig_cost(s))

# %% [markdown]
# **What to conclude.** On a small network the per-step time is dominated by fixed costs, so differences of
# a few percent are within noise between runs (compare seeds); the ranking that matters is at scale, which
# the bench's overhead-against-parameter-count figure shows. Norm Loss's closed form is a few multi-tensor
# ops per step, linear in the number of weights; soft orthogonality and SRIP need a Gram matrix (quadratic in
# the smaller side of F), ONI and OLM an iteration or an eigendecomposition per layer per step.
