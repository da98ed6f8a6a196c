# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # (c) Ablation over the strength λ
#
# The poster plots test error against the regularization factor (1e-2 … 5e-1, log axis) for weight decay and
# Norm Loss and claims Norm Loss is less sensitive to it. Here every method with a strength is swept over a
# log grid; methods without one are drawn as dashed levels for reference.

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
from analysis.notebook import show, study
from oblique.study import StudySpec

# %%
EPOCHS = 1 if SIZE == "small" else 15
if SIZE == "small":
    METHODS, STRENGTHS, SEEDS = ["nl", "wd"], [1e-3, 1e-2, 1e-1], [0]
else:
    METHODS, STRENGTHS, SEEDS = ["baseline", "wd", "nl"], [1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1], [0, 1, 2]
s = study(
    f"{OUT}/strength",
    StudySpec(methods=METHODS, strengths=STRENGTHS, seeds=SEEDS, base={"epochs": EPOCHS}),
    workers=WORKERS,
    threads=THREADS,
)

# %%
from analysis.figures import fig_drift, fig_strength

show(fig_strength(s))

# %% [markdown]
# **What to conclude.** A flatter curve is a method less sensitive to λ. Weight decay shrinks every weight
# toward zero, so beyond some λ it fights the data term and the error climbs (with BatchNorm the scale of a
# filter does not matter to the output, so mild weight decay mostly changes the effective learning rate);
# Norm Loss pulls toward unit norm instead, a target the network can meet at no cost, so its curve should stay
# flat over a wider range. A × at the top marks a strength at which a run diverged.

# %%
show(fig_drift(s))
