"""Shared fixtures and the hypothesis profiles.

Every test (and every subprocess it starts) uses one MNIST-1D cache per session. The property tests
(``tests/test_hostile.py``) run under one of two hypothesis profiles:

- ``fixed``, the default: the same examples on every run (derandomized: drawn from a seed that is a hash
  of the test's source; no example database is read or written), 60 per test, so the suite's outcome does
  not depend on the run;
- ``search``, loaded when ``OBLIQUE_HYPOTHESIS_EXAMPLES`` is set: a random search, that many examples per
  test, new ones on every run (a failure prints how to replay it, and is kept in ``.hypothesis/``).
"""

import os

import pytest
from hypothesis import settings

#: examples per property test in the default run
FIXED_EXAMPLES = 60

settings.register_profile("fixed", max_examples=FIXED_EXAMPLES, derandomize=True, database=None)
SEARCH_EXAMPLES = int(os.environ.get("OBLIQUE_HYPOTHESIS_EXAMPLES") or 2000)
settings.register_profile("search", max_examples=SEARCH_EXAMPLES, derandomize=False, print_blob=True)
settings.load_profile("search" if os.environ.get("OBLIQUE_HYPOTHESIS_EXAMPLES") else "fixed")


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
    spec = StudySpec(
        methods=["nl", "wd", "baseline"],
        strengths=[0.01, 0.1],
        seeds=[0, 1],
        batch_sizes=[100, 200],
        base={"epochs": 1, "drift_every": 10},
    )
    result = run_study(root, expand(spec), workers=0, threads=1, progress=False, echo=lambda line: None)
    assert len(result.ran) == 20 and not result.failed
    return root


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A folder with a finished run, a finished study, an interrupted run and hostile files, in which
    ``hostile_world.outcome`` and ``hostile_world.refused`` run ``oblique`` (built once a session: the tests
    only add files beside what it holds, and check that nothing finished changes)."""
    import torch
    from hostile_world import build_world

    threads = torch.get_num_threads()
    yield build_world(tmp_path_factory.mktemp("world"))
    torch.set_num_threads(threads)
