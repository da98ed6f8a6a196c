"""oblique.export and ``oblique export``: run records as a flat per-step CSV (always) and as TensorBoard
event files, read back with TensorBoard's own reader (when the ``tensorboard`` extra is installed)."""

from __future__ import annotations

import csv
import sys

import pytest

from oblique import records, storage
from oblique.cli import main
from oblique.export import (
    DRIFT_KEYS,
    IDENTITY,
    STEP_COLUMNS,
    TB_SCALARS,
    ExportError,
    export_csv,
    export_tensorboard,
    find_runs,
)
from oblique.study import load_study


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_of_a_study_has_a_row_per_step_of_every_run(tiny_study, tmp_path):
    out = export_csv(tiny_study, tmp_path / "steps.csv")
    rows = _read_csv(out)
    study = load_study(tiny_study)
    assert list(rows[0])[: 1 + len(IDENTITY)] == ["run", *IDENTITY]
    assert list(rows[0])[-len(STEP_COLUMNS) :] == list(STEP_COLUMNS)
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["run"], []).append(r)
    assert set(by_run) == set(study.runs)
    for name, run_rows in by_run.items():
        steps = records.read_metrics(study.run_dir(name), "step")
        drift = records.read_metrics(study.run_dir(name), "drift")
        evals = records.read_metrics(study.run_dir(name), "eval")
        assert len(run_rows) == len(steps) + 1  # every step, and step 0 (drift before training)
        assert [int(r["step"]) for r in run_rows] == list(range(len(steps) + 1))
        first = run_rows[1]
        assert (
            float(first["loss"]) == pytest.approx(steps[0]["loss"]) and float(first["lr"]) == steps[0]["lr"]
        )
        with_drift = [r for r in run_rows if r["norm_dev_mean"]]
        assert len(with_drift) == len(drift)
        assert float(with_drift[-1]["offdiag_dev"]) == pytest.approx(drift[-1]["mean"]["offdiag_dev"])
        with_eval = [r for r in run_rows if r["test_error"]]
        assert [float(r["test_error"]) for r in with_eval] == pytest.approx([e["test_error"] for e in evals])
        g = study.runs[name]["grid"]
        assert {r["method"] for r in run_rows} == {g["method"]} and {int(r["seed"]) for r in run_rows} == {
            g["seed"]
        }
        if g["method"] == "baseline":
            assert all(r["reg"] == "" for r in run_rows)  # no regularizer: an empty cell


def test_csv_of_one_old_run_and_the_command(tmp_path, capsys):
    """A run written before this exporter existed, killed mid-run (no summary.json, a cut last line),
    exports too; a value a record does not hold (no regularizer) is an empty cell."""
    run = tmp_path / "old"
    run.mkdir()
    storage.write_json_atomic(run / "config.json", {"method": "nl", "strength": 0.01, "seed": 3})
    with storage.JsonLinesWriter(run / "metrics.jsonl") as w:
        w.write({"type": "meta", "schema_version": 1, "steps_per_epoch": 2, "total_steps": 4})
        w.write(
            {"type": "drift", "step": 0, "epoch": 0.0, "mean": dict.fromkeys(DRIFT_KEYS, 0.5), "layers": {}}
        )
        w.write({"type": "step", "step": 1, "epoch": 0.5, "loss": 2.0, "lr": 0.1, "reg": None})
        w.write({"type": "step", "step": 2, "epoch": 1.0, "loss": float("nan"), "lr": 0.1, "reg": None})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"type": "step", "st')  # a run killed mid-write
    assert main(["export", "csv", str(run)]) == 0
    assert "csv: 1 run ->" in capsys.readouterr().out
    rows = _read_csv(run / "steps.csv")
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["norm_dev_mean"] == "0.5" and rows[1]["loss"] == "2.0" and rows[2]["loss"] == "nan"
    assert rows[1]["reg"] == "" and rows[1]["method"] == "nl" and rows[1]["run"] == "."


def test_nothing_to_export_is_one_line(tmp_path, capsys):
    with pytest.raises(ExportError, match="holds no run records"):
        find_runs(tmp_path)
    assert main(["export", "csv", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


def test_tensorboard_without_the_extra_says_which_extra(tiny_study, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ExportError, match=r"oblique\[tensorboard\]"):
        export_tensorboard(tiny_study, tmp_path / "tb")
    assert main(["export", "tensorboard", str(tiny_study), "--out", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'oblique[tensorboard]'" in err[0]


def test_tensorboard_event_files_load_back_in_tensorboards_reader(tiny_study, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    assert main(["export", "tensorboard", str(tiny_study), "--out", str(logdir)]) == 0
    assert f"tensorboard --logdir {logdir}" in capsys.readouterr().out
    study = load_study(tiny_study)
    assert {p.name for p in logdir.iterdir()} == set(study.runs)
    for name in ("nl_lam0.01_bs100_seed0", "baseline_bs200_seed1"):
        acc = EventAccumulator(str(logdir / name))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        expected = set(TB_SCALARS) - ({"train/reg"} if name.startswith("baseline") else set())
        assert tags == expected
        steps = records.read_metrics(study.run_dir(name), "step")
        loss = acc.Scalars("train/loss")
        assert [e.step for e in loss] == [s["step"] for s in steps]
        assert [e.value for e in loss] == pytest.approx([s["loss"] for s in steps], rel=1e-6)
        final = records.read_summary(study.run_dir(name))
        assert acc.Scalars("test/error")[-1].value == pytest.approx(final["test_error"], rel=1e-6)
        assert len(acc.Scalars("drift/norm_dev_mean")) == len(
            records.read_metrics(study.run_dir(name), "drift")
        )
        assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")  # the resolved config
    export_tensorboard(tiny_study, logdir)  # again: the run's events are replaced, not doubled
    assert len(list((logdir / "nl_lam0.01_bs100_seed0").glob("events.out.tfevents.*"))) == 1


def test_a_tensorboard_export_stopped_part_way_keeps_the_previous_events(tiny_study, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    import oblique.export as export_module

    logdir = tmp_path / "tb"
    export_tensorboard(tiny_study, logdir)
    events = {p: p.read_bytes() for p in logdir.glob("*/events.out.tfevents.*")}
    real, seen = export_module._write_run, []

    def stopped_in_the_second_run(writer, hparams, run):
        seen.append(run)
        real(writer, hparams, run)
        if len(seen) == 2:
            raise KeyboardInterrupt  # Ctrl-C after the second run's events were written, before its swap

    monkeypatch.setattr(export_module, "_write_run", stopped_in_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        export_tensorboard(tiny_study, logdir)
    kept = {p for p in logdir.glob("*/events.out.tfevents.*") if not p.parent.name.endswith(".partial")}
    assert len(kept) == len(events)  # every run still has one event file: the first replaced, the rest kept
    second = logdir / seen[1].name
    assert {p: p.read_bytes() for p in second.glob("events.out.tfevents.*")} == {
        p: b for p, b in events.items() if p.parent == second
    }
    monkeypatch.setattr(export_module, "_write_run", real)
    export_tensorboard(tiny_study, logdir)  # the next export clears what the stopped one left
    assert not list(logdir.glob("*.partial")) and len(list(logdir.glob("*/events.out.tfevents.*"))) == len(
        events
    )
