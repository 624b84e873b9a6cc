"""Fixtures shared by the chat adapters' tests."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest


@pytest.fixture
def loop_reads(monkeypatch):
    """Names of the files read with ``Path.read_bytes`` on this thread, the event loop's."""
    loop_thread = threading.get_ident()
    names: list[str] = []
    read_bytes = Path.read_bytes

    def spy(path: Path) -> bytes:
        if threading.get_ident() == loop_thread:
            names.append(path.name)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", spy)
    return names
