"""Write the six notebooks of ``notebooks/`` (without outputs) from the cells below.

Run ``python notebooks/build_notebooks.py`` after editing a cell here; the notebooks are generated, so they
stay consistent (one parameters cell, the same helpers, the public API only). ``tests/test_notebooks.py``
executes every notebook at ``SIZE = "small"`` and checks that the committed files match this script.

Every notebook starts with a parameters cell::

    SIZE = os.environ.get("OBLIQUE_NB_SIZE", "small")   # "small": seconds, on 2 CPU cores; "full": the real study
    OUT = os.environ.get("OBLIQUE_NB_OUT", "studies/notebooks")

The default is ``small`` so that opening a notebook and running it top to bottom is quick; set
``SIZE = "full"`` (or ``OBLIQUE_NB_SIZE=full``) for the study the prose talks about.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PARAMETERS = '''\
# Parameters. SIZE = "small" runs top to bottom in well under a minute on 2 CPU cores (the test suite runs
# it); SIZE = "full" is the study the text below talks about (minutes to an hour on 2 cores).
import os

SIZE = os.environ.get("OBLIQUE_NB_SIZE", "small")
OUT = os.environ.get("OBLIQUE_NB_OUT", "studies/notebooks")  # study folders go under here
WORKERS = 0 if SIZE == "small" else 2  # 0: train in this kernel; N: N worker processes
assert SIZE in ("small", "full"), f"SIZE must be 'small' or 'full'; got {SIZE!r}"'''

IMPORTS = '''\
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
    result = run_study(f"{OUT}/{name}", expand(spec), workers=WORKERS, threads=1 if SIZE == "small" else None,
                       progress=False, echo=print)
    display(Markdown(summary_markdown(result.study)))
    return result.study'''


def _epochs(small: int, full: int) -> str:
    return f'EPOCHS = {small} if SIZE == "small" else {full}'


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "a_side_by_side.ipynb": [
        (
            "md",
            """\
# (a) Every method side by side

The toolkit's main use: train the same network on the same data with every registered method
(`oblique.list_methods()`), over seeds, and compare test error, drift from the oblique manifold and cost.
This is what `oblique study` runs with no arguments (MNIST-1D, the default ResNet-1D, 15 epochs, 3 seeds).""",
        ),
        ("code", PARAMETERS),
        ("code", IMPORTS),
        (
            "code",
            f"""\
{_epochs(1, 15)}
SEEDS = [0] if SIZE == "small" else [0, 1, 2]
spec = StudySpec(methods=oblique.list_methods(), seeds=SEEDS, base={{"epochs": EPOCHS}})
s = study("side_by_side", spec)""",
        ),
        (
            "md",
            """\
The table reads like the Norm Loss poster's: the best test error over seeds, then the mean ± sample std in
parentheses. Two methods differ only when their gap is larger than the spread over seeds; with a single
seed (the small setting) the table shows no spread and supports no conclusion about the ranking.""",
        ),
        (
            "code",
            """\
res = results_frame(s)
res[["method", "strength", "seed", "status", "test_error", "norm_dev_mean", "offdiag_dev", "train_time_s"]]""",
        ),
        (
            "code",
            """\
from analysis.figures import fig_cost, fig_loss

show(fig_loss(s))
show(fig_cost(s))""",
        ),
        (
            "md",
            """\
**What to conclude.** The left panel is the per-batch train cross-entropy, the right its moving average
with a band over seeds: a method that converges faster sits lower early on (the poster's convergence-speed
claim). The cost panel separates the regularizer's own hooks (hatched) from the rest of the step;
reparametrizations (wn, oni, olm) pay inside the forward and backward pass, which is why their bars are
taller without a hatch. Whether Norm Loss is "comparable or better" is read off the table above at the full
size, where three seeds give a spread to compare the gaps against.""",
        ),
    ],
    "b_manifold_drift.ipynb": [
        (
            "md",
            """\
# (b) Drift from the oblique manifold

Every method is measured on the weights the forward pass actually uses (`method.effective_weights`), with
the drift metrics of `oblique.geometry`: `norm_dev_mean` = mean |‖F_i‖ − 1| over filters, `ddiag_dev`
= ‖ddiag(FFᵀ) − I‖_F/√n, and `offdiag_dev`, the RMS off-diagonal of FFᵀ (distance from orthogonality).
The study is the same as notebook (a): if (a) ran first, its runs are reused, not retrained.""",
        ),
        ("code", PARAMETERS),
        ("code", IMPORTS),
        (
            "code",
            f"""\
{_epochs(1, 15)}
SEEDS = [0] if SIZE == "small" else [0, 1, 2]
s = study("side_by_side", StudySpec(methods=oblique.list_methods(), seeds=SEEDS, base={{"epochs": EPOCHS}}))""",
        ),
        (
            "code",
            """\
from analysis.figures import fig_drift, fig_drift_layers

show(fig_drift(s))
show(fig_drift_layers(s, "norm_dev_mean"))""",
        ),
        (
            "code",
            """\
final = results_frame(s).groupby("method", sort=False)[list(oblique.DRIFT_KEYS)].mean()
final.style.format("{:.2e}")""",
        ),
        (
            "md",
            """\
**What to conclude.** Hard constraints (projection, Riemannian SGD, reparametrizations that normalize every
filter) hold `norm_dev_mean` and `ddiag_dev` at rounding level by construction; values far above 1e-6 for
them would point to a bug. Norm Loss pulls the norms toward 1 softly: its drift falls over training to a
level set by λ. Weight decay and plain training leave the norms free. `offdiag_dev` shows which methods
also push filters toward orthogonality (oni, olm, so, srip) and which only fix the norms (nl, wn, pbwn,
oblique-rsgd). The per-layer view shows where the drift sits: usually the stem and the widest layers.""",
        ),
    ],
    "c_strength.ipynb": [
        (
            "md",
            """\
# (c) Ablation over the strength λ

The poster plots test error against the regularization factor (1e-2 … 5e-1, log axis) for weight decay and
Norm Loss and claims Norm Loss is less sensitive to it. Here every method with a strength is swept over a
log grid; methods without one are drawn as dashed levels for reference.""",
        ),
        ("code", PARAMETERS),
        ("code", IMPORTS),
        (
            "code",
            f"""\
{_epochs(1, 15)}
if SIZE == "small":
    METHODS, STRENGTHS, SEEDS = ["nl", "wd"], [1e-3, 1e-2, 1e-1], [0]
else:
    METHODS, STRENGTHS, SEEDS = ["baseline", "wd", "nl"], [1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1], [0, 1, 2]
s = study("strength", StudySpec(methods=METHODS, strengths=STRENGTHS, seeds=SEEDS, base={{"epochs": EPOCHS}}))""",
        ),
        (
            "code",
            """\
from analysis.figures import fig_drift, fig_strength

show(fig_strength(s))""",
        ),
        (
            "md",
            """\
**What to conclude.** A flatter curve is a method less sensitive to λ. Weight decay shrinks every weight
toward zero, so beyond some λ it fights the data term and the error climbs (with BatchNorm the scale of a
filter does not matter to the output, so mild weight decay mostly changes the effective learning rate);
Norm Loss pulls toward unit norm instead, a target the network can meet at no cost, so its curve should stay
flat over a wider range. A × at the top marks a strength at which a run diverged.""",
        ),
        ("code", "show(fig_drift(s))"),
    ],
    "d_batch_size.ipynb": [
        (
            "md",
            """\
# (d) Ablation over the batch size

The poster's sensitivity claim, for the batch size: the same learning rate and schedule, batch sizes from
small to large (the learning rate is deliberately *not* scaled with the batch, as in the paper's claim).""",
        ),
        ("code", PARAMETERS),
        ("code", IMPORTS),
        (
            "code",
            f"""\
{_epochs(1, 15)}
if SIZE == "small":
    METHODS, SIZES, SEEDS = ["baseline", "nl"], [50, 200], [0]
else:
    METHODS, SIZES, SEEDS = ["baseline", "wd", "nl", "pbwn"], [25, 50, 100, 200, 400], [0, 1, 2]
s = study("batch_size", StudySpec(methods=METHODS, batch_sizes=SIZES, seeds=SEEDS, base={{"epochs": EPOCHS}}))""",
        ),
        (
            "code",
            """\
from analysis.figures import fig_batch_size

show(fig_batch_size(s))""",
        ),
        (
            "md",
            """\
**What to conclude.** Larger batches mean fewer steps per epoch at the same learning rate, so every method
loses some accuracy at the right of the plot; the claim to test is that Norm Loss loses *less* (a flatter
line) than weight decay and plain training. Compare slopes against the seed bands, not single points.""",
        ),
    ],
    "e_targets_reduction.ipynb": [
        (
            "md",
            """\
# (e) Ablation over targets and Norm Loss's form

Which weights a method acts on is an explicit option (`targets`): convolutions only (the paper's choice)
or convolutions and the final linear layer. The second ablation is Norm Loss's own hyperparameters (its
form, `closed` — eq. 6 added to the gradient in closed form — against `autograd` — eq. 1 added to the
loss — and, where the method declares one, its `reduction` over filters). The two forms of eq. 1/eq. 6
must give the same training up to rounding; a difference in error is noise, a difference in time is the
point of the closed form.""",
        ),
        ("code", PARAMETERS),
        ("code", IMPORTS),
        (
            "code",
            f"""\
{_epochs(1, 15)}
SEEDS = [0] if SIZE == "small" else [0, 1, 2]
targets = study("targets", StudySpec(methods=["wd", "nl"], seeds=SEEDS, base={{"epochs": EPOCHS}},
                                     grid={{"targets": ["conv", "conv+linear"]}}))""",
        ),
        (
            "code",
            """\
from matplotlib.figure import Figure

from analysis import method_colors

r = results_frame(targets)
fig = Figure(figsize=(7, 2.6), layout="constrained")
axes = fig.subplots(1, 2)
for ax, col, label in ((axes[0], "test_error", "test error (%)"), (axes[1], "norm_dev_mean", "final norm_dev_mean")):
    for i, (method, g) in enumerate(r.groupby("method", sort=False)):
        m = g.groupby("targets")[col].mean()
        ax.bar([i - 0.2, i + 0.2], [m.get("conv"), m.get("conv+linear")], width=0.38,
               color=method_colors()[method], edgecolor="black", hatch=["", "//"])
    ax.set_xticks(range(r["method"].nunique()), list(dict.fromkeys(r["method"])))
    ax.set_ylabel(label)
axes[0].set_title("plain: conv only; hatched: conv + linear", fontsize=8)
show(fig)""",
        ),
        (
            "code",
            """\
from oblique.methods import get_method_class

nl_hp = {h.name: h for h in get_method_class("nl").hyperparameters}
grid = {"hp.form": list(nl_hp["form"].choices)}
if "reduction" in nl_hp:  # only where the registered Norm Loss declares a reduction
    grid["hp.reduction"] = list(nl_hp["reduction"].choices)
form = study("nl_form", StudySpec(methods=["nl"], seeds=SEEDS, base={"epochs": EPOCHS}, grid=grid))""",
        ),
        (
            "code",
            """\
r = results_frame(form)
r[["run", "test_error", "norm_dev_mean", "train_time_s", "regularizer_time_s"]]""",
        ),
        (
            "md",
            """\
**What to conclude.** Acting on the linear layer too changes the classifier's row norms, which set the
logits' scale: expect a visible effect on error for weight decay, a smaller one for Norm Loss. For the two
forms, equal error and drift (up to float rounding over many steps) with a smaller `regularizer_time_s`
for `closed` is the expected outcome.""",
        ),
    ],
    "f_compute_cost.ipynb": [
        (
            "md",
            """\
# (f) Compute cost

The poster claims Norm Loss has "negligible overhead" and a lower complexity than most weight
regularization methods. Every run records its training wall time and the time spent in the regularizer's
own hooks (`regularizer_time_s`: the penalty and its backward, the closed-form gradient, projections).
Reparametrizations (wn, oni, olm) pay inside the forward and backward pass instead; `oblique bench`
isolates that cost over model sizes, and `oblique plot STUDY --bench RECORDS` adds it to figure 5.""",
        ),
        ("code", PARAMETERS),
        ("code", IMPORTS),
        (
            "code",
            f"""\
{_epochs(1, 5)}
SEEDS = [0] if SIZE == "small" else [0, 1, 2]
s = study("cost", StudySpec(methods=oblique.list_methods(), seeds=SEEDS, base={{"epochs": EPOCHS}}))""",
        ),
        (
            "code",
            """\
r = results_frame(s)
r["ms_per_step"] = 1e3 * r["train_time_s"] / r["steps"].astype(float)
r["regularizer_share_%"] = 100 * r["regularizer_time_s"] / r["train_time_s"]
base = r[r["method"] == "baseline"]["ms_per_step"].mean()
r["overhead_vs_baseline_%"] = 100 * (r["ms_per_step"] / base - 1)
r.groupby("method", sort=False)[["ms_per_step", "regularizer_share_%", "overhead_vs_baseline_%"]].mean().round(2)""",
        ),
        (
            "code",
            """\
from analysis.figures import fig_cost

show(fig_cost(s))""",
        ),
        (
            "md",
            """\
**What to conclude.** On a small network the per-step time is dominated by fixed costs, so differences of
a few percent are within noise between runs (compare seeds); the ranking that matters is at scale, which
the bench's overhead-against-parameter-count figure shows. Norm Loss's closed form is a few multi-tensor
ops per step, linear in the number of weights; soft orthogonality and SRIP need a Gram matrix (quadratic in
the smaller side of F), ONI and OLM an iteration or an eigendecomposition per layer per step.""",
        ),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, text) in enumerate(NOTEBOOKS[name]):
        cell = new_markdown_cell(text) if kind == "md" else new_code_cell(text)
        cell["id"] = f"{Path(name).stem}-{i}"
        if kind == "code" and text is PARAMETERS:
            cell.metadata["tags"] = ["parameters"]  # papermill-compatible
        nb.cells.append(cell)
    return nb


def main(argv: list[str]) -> int:
    for name in NOTEBOOKS:
        nbformat.write(build(name), HERE / name)
    print(f"wrote {len(NOTEBOOKS)} notebooks into {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
