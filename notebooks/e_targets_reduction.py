# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # (e) Ablation over targets and Norm Loss's form
#
# Which weights a method acts on is an explicit option (`targets`): convolutions only (the paper's choice)
# or convolutions and the final linear layer. The second ablation is Norm Loss's own hyperparameters (its
# form, `closed` — eq. 6 added to the gradient in closed form — against `autograd` — eq. 1 added to the
# loss — and, where the method declares one, its `reduction` over filters). The two forms of eq. 1/eq. 6
# must give the same training up to rounding; a difference in error is noise, a difference in time is the
# point of the closed form.

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
from oblique.study import StudySpec, results_frame

# %%
EPOCHS = 1 if SIZE == "small" else 15
SEEDS = [0] if SIZE == "small" else [0, 1, 2]
targets = study(
    f"{OUT}/targets",
    StudySpec(
        methods=["wd", "nl"], seeds=SEEDS, base={"epochs": EPOCHS}, grid={"targets": ["conv", "conv+linear"]}
    ),
    workers=WORKERS,
    threads=THREADS,
)

# %%
from matplotlib.figure import Figure

from analysis import method_colors

r = results_frame(targets)
fig = Figure(figsize=(7, 2.6), layout="constrained")
axes = fig.subplots(1, 2)
for ax, col, label in (
    (axes[0], "test_error", "test error (%)"),
    (axes[1], "norm_dev_mean", "final norm_dev_mean"),
):
    for i, (method, g) in enumerate(r.groupby("method", sort=False)):
        m = g.groupby("targets")[col].mean()
        ax.bar(
            [i - 0.2, i + 0.2],
            [m.get("conv"), m.get("conv+linear")],
            width=0.38,
            color=method_colors()[method],
            edgecolor="black",
            hatch=["", "//"],
        )
    ax.set_xticks(range(r["method"].nunique()), list(dict.fromkeys(r["method"])))
    ax.set_ylabel(label)
axes[0].set_title("plain: conv only; hatched: conv + linear", fontsize=8)
show(fig)

# %%
from oblique.methods import get_method_class

nl_hp = {h.name: h for h in get_method_class("nl").hyperparameters}
grid = {"hp.form": list(nl_hp["form"].choices)}
if "reduction" in nl_hp:  # only where the registered Norm Loss declares a reduction
    grid["hp.reduction"] = list(nl_hp["reduction"].choices)
form = study(
    f"{OUT}/nl_form",
    StudySpec(methods=["nl"], seeds=SEEDS, base={"epochs": EPOCHS}, grid=grid),
    workers=WORKERS,
    threads=THREADS,
)

# %%
r = results_frame(form)
r[["run", "test_error", "norm_dev_mean", "train_time_s", "regularizer_time_s"]]

# %% [markdown]
# **What to conclude.** Acting on the linear layer too changes the classifier's row norms, which set the
# logits' scale: expect a visible effect on error for weight decay, a smaller one for Norm Loss. For the two
# forms, equal error and drift (up to float rounding over many steps) with a smaller `regularizer_time_s`
# for `closed` is the expected outcome.
