"""The service's error tree. Each error carries a catalogue key, so every adapter turns it
into one clear reply in the user's language.

    StoryError
    ├── BadRequest      the user's input or permissions: reply and move on
    └── RetryLater      a limit was hit: reply, the user may try again later

A job the engine fails on is not an error here: the worker records it on the job row.
"""

from __future__ import annotations

from bot.messages import text


class StoryError(Exception):
    def __init__(self, key: str, **params: object) -> None:
        super().__init__(f"{key}: {params}" if params else key)
        self.key = key
        self.params = params

    def message(self, lang: str) -> str:
        return text(self.key, lang, **self.params)


class BadRequest(StoryError):
    """The user's fault: bad input, unknown job, not allowed."""


class RetryLater(StoryError):
    """A quota or limit: nothing is wrong with the input, but not now."""

