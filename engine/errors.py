"""Errors the engine raises. The bot maps them to user messages; the engine knows no chat."""

from __future__ import annotations


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class InvalidRequest(EngineError, ValueError):
    """The request itself is wrong (bad mode, frame count, plan); raised before any work."""


class Cancelled(EngineError):
    """The caller asked to stop: raised before a batch or a re-roll starts, or by the SDXL renderer
    within one denoising step (it checks at every step); the frames already kept stay on disk."""


class TrainError(EngineError):
    """A training run cannot start or cannot go on; the message says why and what to change."""


class CheckpointError(EngineError):
    """A saved board or checkpoint on disk is missing or unreadable."""
