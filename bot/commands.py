"""Platform-neutral parsing of command arguments (``/story``, ``/regen``, job ids).

Chat adapters hand over the text after the command; this turns it into typed values or
raises ``BadRequest`` with the catalogue key that explains what was wrong.
"""

from __future__ import annotations

from bot.errors import BadRequest
from bot.service import StoryOptions
from engine.limits import allowed_aspects, allowed_frames, allowed_modes, allowed_seeds

_STORY_OPTIONS = {"--mode": "mode", "--frames": "frames", "--seed": "seed", "--aspect": "aspect"}
_STORY_FLAGS = {"--no-lora": ("lora", False)}  # options without a value
_ALLOWED = {"--mode": allowed_modes(), "--frames": allowed_frames(), "--seed": allowed_seeds(),
            "--aspect": allowed_aspects()}
_TEXT_OPTIONS = ("--mode", "--aspect")  # checked against their choices by the service


def parse_story_args(args: str) -> tuple[str, StoryOptions]:
    """Split ``--mode X --frames N --seed S --aspect A --no-lora`` (anywhere in the text) from the story itself."""
    words = args.split()
    story: list[str] = []
    values: dict[str, object] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name, _, inline = word.partition("=")
        if word in _STORY_FLAGS:
            field, value = _STORY_FLAGS[word]
            values[field] = value
            i += 1
        elif name in _STORY_OPTIONS:
            value = inline or (words[i + 1] if i + 1 < len(words) else "")
            i += 1 if inline else 2
            values[_STORY_OPTIONS[name]] = _convert(name, value)
        else:
            story.append(word)
            i += 1
    # Keep the user's own line breaks when no option was taken out.
    text = args.strip() if not values else " ".join(story)
    return text, StoryOptions(**values)


def _convert(name: str, value: str) -> object:
    if not value:
        raise BadRequest("err_bad_option", option=name, allowed=_ALLOWED[name])
    if name in _TEXT_OPTIONS:
        return value
    try:
        return int(value)
    except ValueError:
        raise BadRequest("err_bad_option", option=name, allowed=_ALLOWED[name]) from None


MAX_JOB_ID_DIGITS = 18  # below SQLite's 64-bit INTEGER limit


def _plain_number(value: str, max_digits: int) -> bool:
    """Decimal digits (any script's, which ``int`` reads); ``str.isdigit`` would also pass "²" and "①"."""
    return value.isdecimal() and len(value) <= max_digits


def parse_job_id(value: str) -> int:
    value = value.strip().lstrip("#")
    if not _plain_number(value, MAX_JOB_ID_DIGITS) or int(value) < 1:
        raise BadRequest("err_bad_job_id")
    return int(value)


def parse_regen_args(args: str) -> tuple[int, int | None]:
    """``<job> [frame]`` → (job id, frame number or None)."""
    parts = args.split()
    if not 1 <= len(parts) <= 2:
        raise BadRequest("err_bad_job_id")
    frame = None
    if len(parts) == 2:
        if not _plain_number(parts[1], 2):
            raise BadRequest("err_bad_option", option="frame", allowed=allowed_frames())
        frame = int(parts[1])
    return parse_job_id(parts[0]), frame
