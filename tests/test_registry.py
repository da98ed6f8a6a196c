"""The registry: a new method is one module plus one line (``oblique.methods``' docstring).

Registration (``register``, ``registered``), what each method declares and where the project reads it —
the README's methods table (``markdown_table``), the figure styles (``analysis.style``), the cost targets
(``oblique.cost.targets``) — and the proof: a throwaway method (``tests/toy_method.py``), registered by one
line in a temporary registry, is tested by the contract tests, drawn in its own style and benched with
its target.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import pytest
from toy_method import ToyPenalty

from analysis.figures import fig_cost, fig_drift
from analysis.style import StyleError, method_styles, style
from oblique.cli import main
from oblique.cost import bench, declared_targets, format_table
from oblique.cost.targets import compares_all, target_ticks
from oblique.methods import (
    COST_MEASURES,
    REGISTRY,
    CostTarget,
    Method,
    RegistrationError,
    list_methods,
    markdown_table,
    register,
    registered,
)
from oblique.methods.norm_loss import NormLoss
from oblique.study import StudySpec, expand, run_study

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


# ---------------------------------------------------------------- registration


def test_registered_adds_for_the_block_and_restores_the_registry():
    before = dict(REGISTRY)
    with registered(ToyPenalty):
        assert list_methods() == [*before, "toy"] and REGISTRY["toy"] is ToyPenalty
    assert REGISTRY == before and list(REGISTRY) == list(before)
    with pytest.raises(RuntimeError, match="inside"), registered(ToyPenalty):
        REGISTRY.pop("baseline")
        raise RuntimeError("inside")
    assert list(REGISTRY) == list(before)  # restored after an error, whatever the block changed


def test_register_refuses_what_is_not_a_new_method():
    class Nameless(Method):
        """No name."""

    class Odd(ToyPenalty):
        """A kind no one knows."""

        name, kind = "odd", "magic"

    with registered():
        for bad, message in (
            (int, "register takes a Method subclass"),
            (Nameless, "Nameless has no name"),
            (NormLoss, "method 'nl' is already registered"),
            (Odd, "Odd.kind must be one of none, soft"),
        ):
            with pytest.raises(RegistrationError, match=message):
                register(bad)
        assert register(ToyPenalty) is ToyPenalty and list_methods()[-1] == "toy"


# ---------------------------------------------------------------- the README's methods table


def _readme_table() -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(markdown_table().splitlines()[0])  # the header: the generated table's own
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return "\n".join(lines[start:end]) + "\n"


def test_readme_methods_table_is_generated_from_the_registry(capsys):
    assert _readme_table() == markdown_table()
    assert main(["methods", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table()
    with registered(ToyPenalty):  # a new method brings its row
        rows = markdown_table().splitlines()
        assert len(rows) == 2 + len(list_methods())
        assert (
            rows[-1]
            == "| `toy` | soft | oblique, softly (squared norms) | — | λ·Σᵢ(‖Fᵢ‖² − 1)² | a test's throwaway: no upstream |"
        )


def test_a_method_without_its_readme_row_cannot_be_tabled():
    class Rowless(ToyPenalty):
        """No formula."""

        name, formula = "rowless", ""

    with registered(Rowless), pytest.raises(RegistrationError, match="Rowless.formula must be one non-empty"):
        markdown_table()


# ---------------------------------------------------------------- figure styles


def test_the_styles_are_the_methods_declarations():
    styles = method_styles()
    assert list(styles) == list_methods()
    for name, s in styles.items():
        cls = REGISTRY[name]
        assert s == {"color": cls.color, "marker": cls.marker, "linestyle": cls.linestyle}
    assert style("no-such-method") == {"color": "#7f7f7f", "marker": ".", "linestyle": "-"}


def test_the_built_in_methods_keep_their_look():
    """Paul Tol's muted colours after black, in registry order, each with its marker and line style: the
    figures of every study drawn so far look (byte for byte) as they did."""
    look = {
        "baseline": ("#000000", "o", (0, (6, 2))),
        "wd": ("#cc6677", "s", "-."),
        "nl": ("#332288", "^", "-"),
        "wn": ("#117733", "D", (0, (1, 1))),
        "oblique-rsgd": ("#88ccee", "v", (0, (5, 1, 1, 1))),
        "pbwn": ("#882255", "P", (0, (3, 1, 1, 1, 1, 1))),
        "oni": ("#44aa99", "X", "--"),
        "olm": ("#999933", "*", (0, (1, 2, 4, 2))),
        "so": ("#aa4499", "h", (0, (8, 2, 1, 2))),
        "srip": ("#ddcc77", "<", (0, (2, 2))),
        # the grid's later methods, from Paul Tol's bright and vibrant palettes
        "fwn": ("#0077bb", ">", (0, (2, 1))),
        "stiefel-rsgd": ("#4477aa", "d", (0, (4, 1, 2, 1))),
        "parseval": ("#ee7733", "p", (0, (6, 1, 1, 1, 1, 1, 1, 1))),
    }
    assert {m: (s["color"], s["marker"], s["linestyle"]) for m, s in method_styles().items()} == look


def test_a_method_without_a_style_of_its_own_is_an_error():
    class Plain(Method):
        """No style."""

        name = "plain"

    class Twin(ToyPenalty):
        """Norm Loss's marker."""

        name, marker = "twin", NormLoss.marker

    class Blackish(ToyPenalty):
        """baseline's colour, written another way."""

        name, color = "blackish", "black"

    class Squiggle(ToyPenalty):
        """Not a line style."""

        name, linestyle = "squiggle", "~~"

    for cls, message in (
        (Plain, "method 'plain' declares no figure color or marker or linestyle"),
        (Twin, "methods 'nl' and 'twin' share the marker '\\^'"),
        (Blackish, "methods 'baseline' and 'blackish' share the color '#000000'"),
        (Squiggle, "method 'squiggle': .*linestyle"),
    ):
        with registered(cls), pytest.raises(StyleError, match=message):
            style("nl")  # every figure's style lookup refuses, not only the offender's
    assert "plain" not in method_styles()


# ---------------------------------------------------------------- cost targets


def test_targets_come_from_the_methods_declarations():
    assert all(REGISTRY[name].cost_target is t for name, t in declared_targets().items())
    assert list(declared_targets()) == [m for m in list_methods() if REGISTRY[m].cost_target is not None]
    with registered(ToyPenalty):
        assert list(declared_targets())[-1] == "toy"
    assert ToyPenalty.cost_target == CostTarget(
        "batched", overhead_pct=50.0, speedup=3.0, when=(("batched", True),)
    )


def test_every_way_of_measuring_a_target_has_its_procedure():
    for how, bounds in COST_MEASURES.items():  # a target may name any of them: the bench can measure it
        target = CostTarget(how, **dict.fromkeys(bounds, 1.0))
        ticks = target_ticks(target)  # an overhead is read off the timed rounds: no measurement of its own
        assert (ticks == 0 if how == "overhead" else ticks >= 1) and isinstance(compares_all(target), bool)


# ---------------------------------------------------------------- the proof: one module plus one line


def test_a_new_method_runs_through_the_contract_tests():
    """``tests/test_methods_contract.py`` over the throwaway methods alone, registered by ``toy_plugin``:
    every contract test runs over ``toy`` and passes, and its broken twin fails where it breaks it."""
    path = os.pathsep.join(p for p in (str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "pytest", str(TESTS / "test_methods_contract.py"), "-p", "toy_plugin"]
    argv += ["-k", "toy", "-rf", "-p", "no:cacheprovider", "--no-header", "-v"]
    out = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 1, out.stdout[-3000:]
    verdicts = dict(re.findall(r"^tests/test_methods_contract\.py::(\S+) (PASSED|FAILED)", out.stdout, re.M))
    broken = {t: v for t, v in verdicts.items() if "toy-broken" in t}
    toy = {t: v for t, v in verdicts.items() if t not in broken}
    assert len(toy) == len(broken) == 12 and len(verdicts) == 24, out.stdout[-3000:]
    assert set(toy.values()) == {"PASSED"}  # every contract test ran over it
    assert [t for t, v in broken.items() if v == "FAILED"] == ["test_batched_equals_per_layer[toy-broken-{}]"]


def test_a_new_method_is_drawn_in_its_style_and_benched_with_its_target(tmp_path):
    tiny = dict(batch_size=4, rounds=4, warmup=1, micro_repeats=2, threads=1, progress=False)
    with registered(ToyPenalty):
        study = tmp_path / "study"
        spec = StudySpec(methods=["toy"], seeds=[0], base={"epochs": 1, "drift_every": 10})
        result = run_study(study, expand(spec), workers=0, threads=1, progress=False, echo=lambda line: None)
        assert result.ran and not result.failed
        record = bench(model="cnn", methods="toy", **tiny)
        (tmp_path / "bench.json").write_text(json.dumps(record))
        drift = fig_drift(study)
        cost = fig_cost(study, tmp_path / "bench.json", echo=lambda line: None)

    # the bench timed it and judged the target it declares
    assert list(record["methods"]) == ["baseline", "toy"] and record["methods"]["toy"]["step_ms"] > 0
    target = record["targets"]["toy"]
    assert list(record["targets"]) == ["toy"] and isinstance(target["holds"], bool)
    assert target["target"] == "overhead ≤ 50 % and batched ≥ 3× faster"
    assert target["batched_ms"] > 0 and "faster than per layer" in target["figure"]
    assert "target toy: step overhead" in format_table(record)

    # the figures drew it in its own style, no other method's
    color = mcolors.to_hex(ToyPenalty.color)
    assert color not in {s["color"] for s in method_styles().values()}
    lines = [ln for ax in drift.axes for ln in ax.get_lines()]
    assert lines and {mcolors.to_hex(ln.get_color()) for ln in lines} == {color}
    assert {ln.get_marker() for ln in lines} == {ToyPenalty.marker}
    overhead = {ln.get_label(): ln for ln in cost.axes[1].get_lines()}
    assert set(overhead) == {"toy"} and mcolors.to_hex(overhead["toy"].get_color()) == color
    assert overhead["toy"].get_marker() == ToyPenalty.marker
    bars = [p for p in cost.axes[0].patches if mcolors.to_hex(p.get_facecolor()) == color]
    assert len(bars) == 1  # its step time, in its colour
    assert "toy" not in list_methods()
