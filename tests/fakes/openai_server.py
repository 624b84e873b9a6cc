"""A local OpenAI-compatible server: ``POST /v1/chat/completions`` on 127.0.0.1.

The real ``openai`` SDK talks to it over HTTP. Each request takes the next scripted
``Reply``; with none left, it answers like an honest model: a plan whose captions are the
sentences of the story it finds between the markers of the user message. Every request
body is kept in ``requests`` so tests can assert on what the SDK really sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.shots import POSES


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # the assistant message; None = an honest plan of the story
    delay_s: float = 0.0
    finish_reason: str = "stop"
    refusal: str | None = None
    error: str = "scripted error"
    headers: dict[str, str] = field(default_factory=lambda: {"retry-after-ms": "10"})


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[Reply] = []
        self.reject_json_schema = False  # behave like a server that only knows json_object
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()

    # -- the endpoint ------------------------------------------------------------------------
    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        reply = self.script.pop(0) if self.script else Reply()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if self.reject_json_schema and body.get("response_format", {}).get("type") == "json_schema":
            return _error(400, "response_format of type json_schema is not supported by this model")
        if reply.status != 200:
            return _error(reply.status, reply.error, reply.headers)
        content = reply.content if reply.content is not None else json.dumps(honest_plan(body))
        return web.json_response(_completion(body, content, reply.finish_reason, reply.refusal))

    # -- what tests look at --------------------------------------------------------------------
    def messages(self, number: int = -1) -> dict[str, str]:
        """role -> content of one recorded request."""
        return {m["role"]: m["content"] for m in self.requests[number]["messages"]}


def loopback_client(**kwargs: Any) -> Any:
    """``AsyncOpenAI`` that refuses, loudly, any endpoint that is not on this machine."""
    from urllib.parse import urlparse

    from openai import AsyncOpenAI

    url = kwargs.get("base_url") or os.environ.get("OPENAI_BASE_URL", "")
    if urlparse(str(url)).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise AssertionError(f"a test tried to reach {url!r}; tests talk only to local fakes")
    return AsyncOpenAI(**kwargs)


def honest_plan(body: dict) -> dict:
    """What a good model would answer: shots from the story's own sentences, in the asked range."""
    messages = {m["role"]: m["content"] for m in body["messages"]}
    story = re.search(r"<<<STORY\n(.*)\nSTORY>>>", messages["user"], re.S).group(1)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", story) if s.strip()]
    exact = re.search(r"into exactly (\d+) shots", messages["system"])
    low = int(exact.group(1)) if exact else int(re.search(r"between (\d+) and (\d+) shots", messages["system"]).group(1))
    count = max(low, min(len(sentences), 10 if not exact else low))
    return plan_json([sentences[i % len(sentences)] for i in range(count)])


def plan_json(captions: list[str], *, pose: str | None = None, title: str = "A plan") -> dict:
    shots = []
    for i, caption in enumerate(captions, start=1):
        shots.append({
            "index": i,
            "description": f"Aldar Kose in scene {i}",
            "caption": caption,
            "action": "tricks the bai",
            "setting": "steppe",
            "framing": "wide" if i == 1 else ("close-up" if i % 2 else "medium"),
            "camera_angle": "front",
            "pose": pose or POSES[i % len(POSES)],
            "emotion": "sly",
            "time_of_day": "day",
            "characters": ["bai"],
            "props": [],
        })
    return {"title": title, "language": "en", "shot_count": len(shots), "shots": shots}


def _completion(body: dict, content: str, finish_reason: str, refusal: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "fake"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": None if refusal else content, "refusal": refusal},
            "finish_reason": finish_reason,
            "logprobs": None,
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    payload = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.json_response(payload, status=status, headers=headers or {})
