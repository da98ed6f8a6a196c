"""Shared fixtures: every test (and every subprocess it starts) uses one MNIST-1D cache per session."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _oblique_cache(tmp_path_factory):
    old = os.environ.get("OBLIQUE_CACHE")
    os.environ["OBLIQUE_CACHE"] = str(tmp_path_factory.mktemp("oblique-cache"))
    yield
    if old is None:
        os.environ.pop("OBLIQUE_CACHE", None)
    else:
        os.environ["OBLIQUE_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A tiny real study for the claims, the figures and the exports: Norm Loss and weight decay at two
    strengths and two batch sizes, baseline at both batch sizes, two seeds, one epoch (20 short runs)."""
    from oblique.study import StudySpec, expand, run_study

    root = tmp_path_factory.mktemp("tiny-study")
    spec = StudySpec(methods=["nl", "wd", "baseline"], strengths=[0.01, 0.1], seeds=[0, 1], batch_sizes=[100, 200],
                     base={"epochs": 1, "drift_every": 10})  # fmt: skip
    result = run_study(root, expand(spec), workers=0, threads=1, progress=False, echo=lambda line: None)
    assert len(result.ran) == 20 and not result.failed
    return root
