"""Reliability figures: numbers a test measured (sizes, counts, rates, memory), printed at the end of the run.

A test records a figure with the session-wide ``figures`` fixture::

    def test_something(figures):
        figures("flood: submissions per second", f"{rate:.0f}")

and ``pytest_terminal_summary`` prints every recorded figure under a "reliability figures"
heading, also when every test passed, so CI logs keep the numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_FIGURES = pytest.StashKey[dict[str, str]]()


def _recorded(config: pytest.Config) -> dict[str, str]:
    return config.stash.setdefault(_FIGURES, {})


@pytest.fixture(scope="session")
def figures(pytestconfig: pytest.Config) -> Callable[[str, str], None]:
    """``figures(name, value)``: record a figure; recording the same name again replaces its value."""
    recorded = _recorded(pytestconfig)

    def record(name: str, value: str) -> None:
        recorded[str(name)] = str(value)

    return record


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    recorded = _recorded(config)
    if not recorded:
        return
    terminalreporter.write_sep("=", "reliability figures")
    width = max(len(name) for name in recorded)
    for name, value in recorded.items():
        terminalreporter.write_line(f"{name.ljust(width)}  {value}")
