"""Fixtures for the engine's tests."""

from __future__ import annotations

import pytest

# float16 is refused on the CPU by config (it needs CUDA); bfloat16 is the half precision a CPU runs,
# and what a GPU bug in half precision (a module left in float32, a dtype mismatch) shows up in here
RENDER_DTYPES = ("float32", "bfloat16")


@pytest.fixture(scope="module", params=RENDER_DTYPES)
def render_dtype(request) -> str:
    """The engine dtype of this round of a ``half_precision`` module: every test using it runs once
    in each, and the module's models are built once per round."""
    return request.param


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "render_dtype" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.half_precision)
