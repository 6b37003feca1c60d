"""Packaging tests build and install real artefacts: slow, so marked and given more time."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/packaging/" in str(item.fspath) and item.fspath.basename in ("test_wheel.py", "test_deb.py"):
            item.add_marker(pytest.mark.packaging)
            item.add_marker(pytest.mark.timeout(1800))
