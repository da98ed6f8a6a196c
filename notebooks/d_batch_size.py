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
assert SIZE in ("small", "full"), f"SIZE must be 'small' or 'full'; got {SIZE!r}"

# %%
import io

from IPython.display import Image, Markdown, display

import oblique  # noqa: F401
from oblique.study import StudySpec, expand, results_frame, run_study, summary_markdown  # noqa: F401


def show(fig):
    """Display a matplotlib Figure as a PNG (works under any backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    display(Image(buf.getvalue()))


def study(name, spec):
    """Run (or resume) the study OUT/name and show its summary table."""
    result = run_study(
        f"{OUT}/{name}",
        expand(spec),
        workers=WORKERS,
        threads=1 if SIZE == "small" else None,
        progress=False,
        echo=print,
    )
    display(Markdown(summary_markdown(result.study)))
    return result.study


# %%
EPOCHS = 1 if SIZE == "small" else 15
if SIZE == "small":
    METHODS, SIZES, SEEDS = ["baseline", "nl"], [50, 200], [0]
else:
    METHODS, SIZES, SEEDS = ["baseline", "wd", "nl", "pbwn"], [25, 50, 100, 200, 400], [0, 1, 2]
s = study("batch_size", StudySpec(methods=METHODS, batch_sizes=SIZES, seeds=SEEDS, base={"epochs": EPOCHS}))

# %%
from analysis.figures import fig_batch_size

show(fig_batch_size(s))

# %% [markdown]
# **What to conclude.** Larger batches mean fewer steps per epoch at the same learning rate, so every method
# loses some accuracy at the right of the plot; the claim to test is that Norm Loss loses *less* (a flatter
# line) than weight decay and plain training. Compare slopes against the seed bands, not single points.
