"""A pytest plugin that registers the throwaway methods of ``toy_method.py`` (``toy`` and its broken twin,
``toy-broken``) for one pytest session: ``python -m pytest -p toy_plugin ...`` with ``tests/`` on
``PYTHONPATH`` (``tests/test_registry.py`` runs the contract tests so).

The registration happens when pytest configures the session (before collection, so the contract tests'
parametrization over ``list_methods()`` sees them), never on import: pytest's doctest collection imports
this module in the suite's own process too.
"""

from __future__ import annotations

from contextlib import ExitStack

from oblique.methods import registered

_registry = ExitStack()


def pytest_configure(config) -> None:
    from toy_method import BrokenToy, ToyPenalty

    _registry.enter_context(registered(ToyPenalty, BrokenToy))


def pytest_unconfigure(config) -> None:
    _registry.close()
