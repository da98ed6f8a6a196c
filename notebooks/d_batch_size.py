# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # (d) Ablation over the batch size
#
# The poster's sensitivity claim, for the batch size: the same learning rate and schedule, batch sizes from
# small to large (the learning rate is deliberately *not* scaled with the batch, as in the paper's claim).

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
    METHODS, SIZES, SEEDS = ["baseline", "nl"], [50, 200], [0]
else:
    METHODS, SIZES, SEEDS = ["baseline", "wd", "nl", "pbwn"], [25, 50, 100, 200, 400], [0, 1, 2]
s = study(
    f"{OUT}/batch_size",
    StudySpec(methods=METHODS, batch_sizes=SIZES, seeds=SEEDS, base={"epochs": EPOCHS}),
    workers=WORKERS,
    threads=THREADS,
)

# %%
from analysis.figures import fig_batch_size

show(fig_batch_size(s))

# %% [markdown]
# **What to conclude.** Larger batches mean fewer steps per epoch at the same learning rate, so every method
# loses some accuracy at the right of the plot; the claim to test is that Norm Loss loses *less* (a flatter
# line) than weight decay and plain training. Compare slopes against the seed bands, not single points.
