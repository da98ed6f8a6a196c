# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # (a) Every method side by side
#
# The toolkit's main use: train the same network on the same data with every registered method
# (`oblique.list_methods()`), over seeds, and compare test error, drift from the oblique manifold and cost.
# This is what `oblique study` runs with no arguments (MNIST-1D, the default ResNet-1D, 15 epochs, 3 seeds).

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
EPOCHS = 1 if SIZE == "small" else 15
SEEDS = [0] if SIZE == "small" else [0, 1, 2]
spec = StudySpec(methods=oblique.list_methods(), seeds=SEEDS, base={"epochs": EPOCHS})
s = study(f"{OUT}/side_by_side", spec, workers=WORKERS, threads=THREADS)

# %% [markdown]
# The table reads like the Norm Loss poster's: the best test error over seeds, then the mean ± sample std in
# parentheses. Two methods differ only when their gap is larger than the spread over seeds; with a single
# seed (the small setting) the table shows no spread and supports no conclusion about the ranking.

# %%
res = results_frame(s)
res[["method", "strength", "seed", "status", "test_error", "norm_dev_mean", "offdiag_dev", "train_time_s"]]

# %%
from analysis.figures import fig_cost, fig_loss

show(fig_loss(s))
show(fig_cost(s))

# %% [markdown]
# **What to conclude.** The left panel is the per-batch train cross-entropy, the right its moving average
# with a band over seeds: a method that converges faster sits lower early on (the poster's convergence-speed
# claim). The cost panel separates the regularizer's own hooks (hatched) from the rest of the step;
# reparametrizations (wn, oni, olm) pay inside the forward and backward pass, which is why their bars are
# taller without a hatch. Whether Norm Loss is "comparable or better" is read off the table above at the full
# size, where three seeds give a spread to compare the gaps against.
