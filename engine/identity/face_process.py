"""dlib's face checks in a child process, so they run beside the render thread instead of stopping it.

dlib's CNN face detector holds the GIL for its whole call: about 1 s a frame on one core, and
a Python thread next to it makes no progress at all meanwhile (``bench/face_checks.py`` measures
it). On a thread of its own it would still stop the engine thread from launching the next
batch's CUDA kernels. A child process has its own interpreter, so the check of one batch and
the rendering of the next really overlap.

It also keeps a dlib crash out of the bot (dlib has corrupted its heap on odd inputs): the call
that met it fails with ``FaceProcessDied`` and the next call starts a fresh child.

The child is started with ``spawn``: forking a process that holds a CUDA context and threads
is unsafe. ``FaceProcess`` offers what the validator calls: ``faces_in`` and ``distance``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import EngineError
from engine.identity.faces import FaceBox, FaceIdentity

log = logging.getLogger(__name__)

_child_identity: FaceIdentity | None = None  # the child's models, loaded on its first call


class FaceProcessDied(EngineError):
    """The face-check child exited mid-call (a dlib crash, or it was killed)."""


def _in_child(options: dict[str, Any], method: str, args: tuple) -> Any:
    global _child_identity
    if _child_identity is None:
        _child_identity = FaceIdentity(**options)
    if method == "models_dir":
        return _child_identity.models_dir
    if method == "pid":
        return os.getpid()
    return getattr(_child_identity, method)(*args)


class FaceProcess:
    """``FaceIdentity`` in one child process; calls block the caller (and release its GIL).

    Not thread-safe, like ``FaceIdentity``: one caller thread at a time.
    """

    distance = staticmethod(FaceIdentity.distance)

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._pool: ProcessPoolExecutor | None = None
        # Loads the models in the child now, so a missing model fails at start-up, not mid-board.
        self.models_dir: Path = self._call("models_dir")
        self._signature: str = self._call("signature")

    def faces_in(self, images: Sequence[Image.Image]) -> list[tuple[FaceBox | None, np.ndarray | None]]:
        return self._call("faces_in", list(images))

    def signature(self) -> str:
        return self._signature

    def child_pid(self) -> int:
        """The child's process id (starting one if none is running)."""
        return self._call("pid")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _call(self, method: str, *args: Any) -> Any:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(_in_child, self._options, method, args).result()
        except BrokenProcessPool as exc:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None  # the next call starts a fresh child
            log.error("the face-check process died during %s; the next check starts a new one", method)
            raise FaceProcessDied(f"the face check stopped: its process died during {method} ({exc})") from exc
