"""Shared fixtures: configs in a temp dir, a real SQLite store, the sample stories.

Nothing here reaches the network: the hub is switched off, and every test builds what
it needs locally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# No test may reach OpenAI: a client that is not pointed at a fake lands on a closed port.
os.environ.pop("OPENAI_API_KEY", None)
os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bot.config import AppConfig  # noqa: E402
from bot.store.store import Store  # noqa: E402


def pytest_collection_modifyitems(config, items) -> None:
    """Skip ``@pytest.mark.gpu`` tests unless CUDA and the real weights are there."""
    if _gpu_ready():
        return
    skip = pytest.mark.skip(reason="needs CUDA and ALDAR_SDXL_BASE / ALDAR_CLIP weights")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _gpu_ready() -> bool:
    if not (os.environ.get("ALDAR_SDXL_BASE") and os.environ.get("ALDAR_CLIP")):
        return False
    import torch

    return torch.cuda.is_available()


def stories_dir() -> Path:
    """The shared sample stories: ../shared/stories beside the repo (CI and dev), or $STORIES_DIR."""
    if os.environ.get("STORIES_DIR"):
        return Path(os.environ["STORIES_DIR"])
    return REPO.parent / "shared" / "stories"


@pytest.fixture
def stories() -> dict[str, str]:
    folder = stories_dir()
    found = {p.stem: p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))}
    assert found, f"no sample stories in {folder}"
    return found


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., AppConfig]:
    """An AppConfig writing into tmp_path, with small frames; sections overridable by dict."""

    def _make(**sections: dict) -> AppConfig:
        data: dict = {
            "storage": {"database": tmp_path / "bot.sqlite3", "outputs": tmp_path / "outputs"},
            "engine": {"width": 128, "height": 128},
            "queue": {"poll_interval_s": 0.05},
            "observability": {"port": 0},
        }
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        return AppConfig.model_validate(data)

    return _make


@pytest.fixture
def config(make_config) -> AppConfig:
    return make_config()


# -- tiny random-weight models -------------------------------------------------------------
# Built once per session and saved like real weights; tests load them through the same
# production code (engine.models). tests.tiny_models imports torch, so it is imported inside
# the fixtures: tests that need no model do not pay for it.


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved ``StableDiffusionXLPipeline`` folder (model_index.json, unet/, vae/, ...)."""
    from tests.tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved ``CLIPModel`` + ``CLIPProcessor`` folder (32x32 images, 32-d embeddings)."""
    from tests.tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_lora_file(tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``.../pytorch_lora_weights.safetensors``: a UNet LoRA in diffusers/PEFT format."""
    from tests.tiny_models import build_tiny_lora

    return build_tiny_lora(tiny_sdxl_dir, tmp_path_factory.mktemp("tiny_lora"))


@pytest.fixture(scope="session")
def tiny_kohya_lora_file(tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same LoRA as ``tiny_lora_file``, as a kohya-ss (SGM key names) safetensors file."""
    from tests.tiny_models import build_tiny_kohya_lora

    return build_tiny_kohya_lora(tiny_sdxl_dir, tmp_path_factory.mktemp("tiny_kohya") / "aldar_kose.safetensors")


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved SDXL ControlNet made from the tiny UNet (``ControlNetModel.from_unet``)."""
    from tests.tiny_models import build_tiny_controlnet

    return build_tiny_controlnet(tiny_sdxl_dir, tmp_path_factory.mktemp("tiny_controlnet"))


@pytest.fixture(scope="session")
def tiny_ip_adapter_dir(tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The h94/IP-Adapter folder layout with tiny weights and a tiny image encoder."""
    from tests.tiny_models import build_tiny_ip_adapter

    return build_tiny_ip_adapter(tiny_sdxl_dir, tmp_path_factory.mktemp("tiny_ip_adapter"))


@pytest.fixture
def fake_openai():
    """A local /v1/chat/completions server for the real openai SDK."""
    from tests.fakes.openai_server import FakeOpenAI

    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
async def store(tmp_path: Path):
    opened = await Store.open(tmp_path / "store.sqlite3")
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def character_pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic pictures of one 'character' (drawn with Pillow) to train on."""
    from tests.helpers import draw_character

    folder = tmp_path_factory.mktemp("character")
    for index in range(4):
        draw_character(folder / f"aldar_{index}.png", index)
    return folder
