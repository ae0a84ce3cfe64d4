"""The ``>>>`` examples in the package's docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import techrevati.runtime as package

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(package.__path__, prefix="techrevati.runtime.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"


def test_the_examples_exist() -> None:
    # Guard against this file silently testing nothing.
    attempted = sum(doctest.testmod(importlib.import_module(n)).attempted for n in MODULES)
    assert attempted >= 50
