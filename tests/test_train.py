"""One training run end to end: records, determinism, divergence, and the pull toward the manifold."""

import json
import math

import pytest

from oblique import records
from oblique.config import RunConfig
from oblique.geometry import DRIFT_KEYS
from oblique.train import train

SUMMARY_KEYS = {
    "status",
    "method",
    "strength",
    "targets",
    "seed",
    "test_error",
    "test_error_top5",
    "train_time_s",
    "regularizer_time_s",
    "drift",
}


def _quick(tmp_path, **kw):
    kw.setdefault("epochs", 1)
    return RunConfig(out=str(tmp_path / kw.pop("name", "run")), progress=False, **kw)


def test_run_writes_its_records(tmp_path):
    cfg = _quick(tmp_path, method="nl", targets="conv+linear", epochs=2, drift_every=10)
    summary = train(cfg)
    run = tmp_path / "run"
    assert SUMMARY_KEYS <= set(summary)
    assert records.read_summary(run) == json.loads(json.dumps(summary))
    assert summary["status"] == "ok" and summary["targets"] == "conv+linear"
    assert 0 <= summary["test_error"] <= 100 and summary["test_error_top5"] <= summary["test_error"]
    assert summary["regularizer_time_s"] > 0
    assert set(summary["drift"]["mean"]) == set(DRIFT_KEYS)
    assert "fc" in summary["drift"]["layers"]  # the linear classifier is targeted

    config = records.read_config(run)
    assert config["method_config"]["hyperparameters"] == {"form": "closed"}
    assert config["epochs"] == 2 and config["optimizer"] == "sgd"  # resolved from the recipe

    meta, *_ = records.read_metrics(run)
    assert meta["type"] == "meta" and meta["schema_version"] == records.SCHEMA_VERSION
    steps = records.read_metrics(run, "step")
    assert len(steps) == 2 * meta["steps_per_epoch"] == summary["steps"]
    assert all(s["reg"] is not None for s in steps)
    drifts = records.read_metrics(run, "drift")
    assert drifts[0]["step"] == 0 and drifts[-1]["step"] == len(steps)
    assert [d["step"] for d in drifts[1:-1]] == list(range(10, len(steps), 10))
    evals = records.read_metrics(run, "eval")
    assert [e["epoch"] for e in evals] == [1.0, 2.0]
    assert evals[-1]["test_error"] == summary["test_error"]
    assert (run / "model.pt").exists()


def test_same_seed_same_result(tmp_path):
    a = train(_quick(tmp_path, name="a", method="nl", seed=3, epochs=2))
    b = train(_quick(tmp_path, name="b", method="nl", seed=3, epochs=2))
    c = train(_quick(tmp_path, name="c", method="nl", seed=4, epochs=2))
    assert a["test_error"] == b["test_error"] and a["drift"] == b["drift"]
    assert records.read_metrics(tmp_path / "a", "step") == records.read_metrics(tmp_path / "b", "step")
    assert a["drift"] != c["drift"]


def test_divergence_is_recorded(tmp_path):
    summary = train(_quick(tmp_path, method="wd", strength=1e6, lr=10.0))
    assert summary["status"] == "diverged"
    assert summary["diverged_step"] >= 1 and math.isnan(summary["test_error"])
    (rec,) = records.read_metrics(tmp_path / "run", "diverged")
    assert rec["step"] == summary["diverged_step"]
    assert records.is_finished(tmp_path / "run")


def test_schedules_and_adam_run(tmp_path):
    for i, kw in enumerate(
        [
            {"schedule": "multistep", "milestones": [0.5], "warmup_epochs": 0.5},
            {"schedule": "constant", "optimizer": "adam", "lr": 1e-3},
        ]
    ):
        s = train(_quick(tmp_path, name=f"r{i}", epochs=2, **kw))
        lrs = [r["lr"] for r in records.read_metrics(tmp_path / f"r{i}", "step")]
        assert s["status"] == "ok"
        if kw["schedule"] == "constant":
            assert len(set(lrs)) == 1
        else:
            assert lrs[0] < lrs[len(lrs) // 4] and lrs[-1] == pytest.approx(0.01)


def test_default_run_pulls_toward_the_manifold(tmp_path):
    """Acceptance: at the default length and strengths, nl's final norm_dev_mean is >= 5x smaller than
    baseline's and wd's, and every test error is at most 10 %."""
    res = {
        m: train(RunConfig(method=m, out=str(tmp_path / m), progress=False)) for m in ("baseline", "wd", "nl")
    }
    dev = {m: s["drift"]["mean"]["norm_dev_mean"] for m, s in res.items()}
    assert dev["baseline"] >= 5 * dev["nl"], dev
    assert dev["wd"] >= 5 * dev["nl"], dev
    for m, s in res.items():
        assert s["test_error"] <= 10.0, (m, s["test_error"])
