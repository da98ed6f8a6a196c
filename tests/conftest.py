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
