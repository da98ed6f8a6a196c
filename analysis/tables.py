"""Figure 6: the study's summary table, figure-ready, as markdown and LaTeX (booktabs).

The table of ``summary.md`` (:func:`oblique.study.summary_markdown`; its claims section stays there): per group of runs that differ
only in their seed, the test error best (mean ± sample std over seeds), as the Norm Loss poster lays out
its tables (Georgiou et al., ICPR 2020), the final drift and the time, with the poster's figures beside
ours where the dataset and model match a published setting.
"""

from __future__ import annotations

import os
from functools import partial

from oblique.study import PUBLISHED, Study, load_study, published_cell, summary_frame, summary_markdown
from oblique.text import number

__all__ = ["table_latex", "table_markdown"]


def table_markdown(study: Study | str | os.PathLike) -> str:
    """The summary table as markdown (``summary.md`` without its grid and claims sections)."""
    return summary_markdown(study, claims=False, grid=False)


_n = partial(number, missing="--")  # LaTeX: a missing number is an en dash


def _tex(text: str) -> str:
    return (
        str(text)
        .replace("\\", r"\textbackslash{}")
        .replace("_", r"\_")
        .replace("%", r"\%")
        .replace("&", r"\&")
    )


def table_latex(study: Study | str | os.PathLike) -> str:
    """The summary table as a LaTeX ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    if not isinstance(study, Study):
        study = load_study(study)
    sf = summary_frame(study)
    keys = [k for k in study.grid_variables if k not in ("seed", "method", "strength", "batch_size")]
    published = not sf.empty and any(
        (d, m) in PUBLISHED for d, m in zip(sf["dataset"], sf["model"], strict=True)
    )
    head = [
        "method",
        r"$\lambda$",
        "batch",
        *map(_tex, keys),
        r"test error \% best (mean $\pm$ std)",
        r"top-5 \%",
        "norm dev.",
        "off-diag. dev.",
        "time (s)",
    ]
    if published:
        head.append("published best (mean)")
    lines = [
        r"\begin{tabular}{" + "l" * (3 + len(keys)) + "r" * (len(head) - 3 - len(keys)) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    for _, r in sf.iterrows():
        err = (
            f"{_n(r['error_best'], '.2f')} ({_n(r['error_mean'], '.2f')} $\\pm$ {_n(r['error_std'], '.2f')})"
        )
        cells = [
            _tex(r["method"]),
            _n(r["strength"], "g") if r["strength_applies"] else "--",
            str(r["batch_size"]),
            *(_tex(r[k]) for k in keys),
            err,
            _n(r["top5_mean"], ".2f"),
            _n(r["norm_dev_mean_mean"], ".3g"),
            _n(r["offdiag_dev_mean"], ".3g"),
            _n(r["train_time_s"], ".1f"),
        ]
        if published:
            cells.append(_tex(published_cell(r["dataset"], r["model"], r["method"]) or "--"))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
