"""``pick-checkpoint``: draw a fixed validation set with every checkpoint and name the best one.

For each ``OUT/checkpoint-N`` the base pipeline (loaded once through ``engine.models``) takes
the checkpoint's LoRA, draws every ``[pick]`` prompt at every seed, and gives it back. Each
render is scored with the engine's own ``ClipScorer``:

- **identity**: CLIP similarity of the render to the training pictures, on the face crop when
  ``face_check`` finds a face (the engine's own validation scorer);
- **CLIP-T**: similarity to the prompt (the trigger read as "a person", which CLIP knows);
- **copies**: renders closer than ``copy_ceiling`` to any one training picture. Their identity
  counts as zero, so a checkpoint that memorised its pictures cannot win on identity;
- **effect**: how far its renders are from the base model's (mean |Δ| in grey levels).
  A checkpoint with no effect (zeroed or empty weights) learned nothing and is never picked;
  one with non-finite weights or that fails to load is reported and skipped.

combined = mean(identity, copies as 0) + ``clip_t_weight`` x mean(CLIP-T). The base model is
drawn too and shown as the first row, so each figure can be read against it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from engine.errors import EngineError
from engine.models import ModelLoader
from engine.rendering.fonts import load_font
from engine.settings import PickSettings, RenderSettings
from engine.training.data import picture_files
from engine.training.train import LORA_FILE, STATE_FILE, checkpoint_dirs

log = logging.getLogger(__name__)

CSV_FILE = "checkpoints.csv"
SHEET_FILE = "checkpoints.png"
NO_EFFECT_LEVELS = 0.5  # mean |Δ| from the base model's renders below this: the LoRA changes nothing
BASE_ROW = "base model"
ADAPTER = "pick"


class PickError(EngineError):
    """Checkpoints cannot be compared; the message says why."""


@dataclass
class Row:
    name: str
    step: int | None
    identity: float = math.nan
    clip_t: float = math.nan
    copies: int = 0
    effect: float = math.nan
    combined: float = math.nan
    note: str = ""
    renders: list[Image.Image] = field(default_factory=list, repr=False)

    @property
    def eligible(self) -> bool:
        return self.step is not None and not self.note and math.isfinite(self.combined)


@dataclass
class PickResult:
    rows: list[Row]
    best: Row | None
    csv_path: Path
    sheet_path: Path


def combine(identities: Sequence[float], nearest: Sequence[float], clip_ts: Sequence[float],
            settings: PickSettings) -> tuple[float, float, int, float]:
    """(identity with copies as 0, mean CLIP-T, copies, combined) for one checkpoint's renders."""
    counted = [0.0 if near > settings.copy_ceiling else ident for ident, near in zip(identities, nearest, strict=True)]
    copies = sum(near > settings.copy_ceiling for near in nearest)
    identity, clip_t = float(np.mean(counted)), float(np.mean(clip_ts))
    return identity, clip_t, copies, identity + settings.clip_t_weight * clip_t


def read_state(checkpoint: Path) -> dict:
    path = checkpoint / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def weights_problem(checkpoint: Path) -> str:
    """"" when the LoRA file is readable with finite weights, else what is wrong with it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = checkpoint / LORA_FILE
    if not path.is_file():
        return f"no {LORA_FILE}"
    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as exc:
        return f"unreadable weights ({exc})"
    import torch

    bad = [key for key, value in weights.items() if not bool(torch.isfinite(value).all())]
    return f"non-finite weights in {len(bad)} tensor(s)" if bad else ""


class Judge:
    """Renders and scores the validation set; the pipeline and CLIP are loaded once."""

    def __init__(self, base_model: str, clip_model: str, settings: PickSettings, trigger: str,
                 training_pictures: list[Image.Image], device: str = "auto", face_check: bool = False) -> None:
        from engine.identity.validate import ClipScorer

        self.settings, self.trigger = settings, trigger
        self.loader = ModelLoader(RenderSettings(
            renderer="sdxl", base_model=base_model, clip_model=clip_model, device=device, ref_guided=False,
            fuse_qkv=False, compile_unet=False, width=settings.resolution, height=settings.resolution,
            steps=settings.steps, guidance=settings.guidance))
        self.pipe = self.loader.pipeline()
        model, processor = self.loader.clip()
        faces = self.loader.faces() if face_check else None  # identity on the face crop, as the engine validates
        self.scorer = ClipScorer(model, processor, reference_images=training_pictures, faces=faces)
        self.training = self.scorer.embed_images(training_pictures)
        self.prompts = [(prompt.format(trigger=trigger), prompt.format(trigger="a person"), seed)
                        for prompt in settings.prompts for seed in settings.seeds]

    def render(self) -> list[Image.Image]:
        import torch

        s = self.settings
        return [self.pipe(prompt, num_inference_steps=s.steps, guidance_scale=s.guidance, width=s.resolution,
                          height=s.resolution, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
                for prompt, _, seed in self.prompts]

    def score(self, row: Row, base: Row | None) -> Row:
        texts = [text for _, text, _ in self.prompts]
        scores = self.scorer.score(row.renders, texts=texts, reference=None)
        nearest = (self.scorer.embed_images(row.renders) @ self.training.T).max(dim=1).values.tolist()
        row.identity, row.clip_t, row.copies, row.combined = combine(
            [s["identity"] for s in scores], nearest, [s["clip_t"] for s in scores], self.settings)
        if base is not None:
            row.effect = float(np.mean([np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean()
                                        for a, b in zip(row.renders, base.renders, strict=True)]))
            if row.effect < NO_EFFECT_LEVELS:
                row.note = "no effect: draws what the base model draws"
        return row

    def checkpoint_row(self, checkpoint: Path, step: int, base: Row) -> Row:
        row = Row(checkpoint.name, step)
        problem = weights_problem(checkpoint)
        if problem:
            row.note = problem
            return row
        self.pipe.load_lora_weights(str(checkpoint), weight_name=LORA_FILE, adapter_name=ADAPTER)
        try:
            row.renders = self.render()
        finally:
            self.pipe.delete_adapters(ADAPTER)
        return self.score(row, base)


def pick_checkpoint(out: Path, *, base_model: str, clip_model: str, settings: PickSettings = PickSettings(),
                    images: Path | None = None, trigger: str | None = None, device: str = "auto",
                    face_check: bool = False) -> PickResult:
    """Score every checkpoint under ``out``; write the CSV and contact sheet there; name the best."""
    # 1. check inputs: checkpoints, their trigger and training pictures
    checkpoints = checkpoint_dirs(out)
    if not checkpoints:
        raise PickError(f"no checkpoint-N folders in {out}; train first (python -m bot train-lora --out {out})")
    state = read_state(checkpoints[-1])
    trigger = trigger or state.get("config", {}).get("trigger")
    images = images or (Path(state["images"]) if state.get("images") else None)
    if not trigger or images is None:
        raise PickError(f"{checkpoints[-1] / STATE_FILE} does not say the trigger and training pictures; "
                        "pass --trigger and --images")
    files = picture_files(images)
    if not files:
        raise PickError(f"no training pictures in {images} to compare identity with")
    pictures = []
    for path in files:
        with Image.open(path) as picture:
            pictures.append(picture.convert("RGB"))
    # 2. the base model's renders, then each checkpoint's
    judge = Judge(base_model, clip_model, settings, trigger, pictures, device, face_check)
    base = judge.score(Row(BASE_ROW, None, renders=judge.render()), None)
    rows = [base]
    for checkpoint in checkpoints:
        step = int(checkpoint.name.rsplit("-", 1)[1])
        rows.append(judge.checkpoint_row(checkpoint, step, base))
        log.info("%s: %s", checkpoint.name, rows[-1].note or f"combined {rows[-1].combined:.4f}")
    # 3. the verdict, written down
    eligible = [row for row in rows if row.eligible]
    best = max(eligible, key=lambda row: (row.combined, row.step)) if eligible else None
    csv_path, sheet_path = out / CSV_FILE, out / SHEET_FILE
    write_csv(rows, best, csv_path)
    contact_sheet(rows, best, [text for _, text, _ in judge.prompts]).save(sheet_path)
    return PickResult(rows, best, csv_path, sheet_path)


def write_csv(rows: list[Row], best: Row | None, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["checkpoint", "step", "identity", "clip_t", "copies", "effect", "combined", "best", "note"])
        for row in rows:
            writer.writerow([row.name, "" if row.step is None else row.step, _fmt(row.identity), _fmt(row.clip_t),
                             row.copies, _fmt(row.effect), _fmt(row.combined), "yes" if row is best else "", row.note])


def table(rows: list[Row], best: Row | None) -> str:
    """The comparison as aligned text, best row marked."""
    header = ("", "checkpoint", "identity", "CLIP-T", "copies", "effect", "combined", "note")
    lines = [header] + [("*" if row is best else "", row.name, _fmt(row.identity), _fmt(row.clip_t), str(row.copies),
                         _fmt(row.effect), _fmt(row.combined), row.note) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _fmt(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.4f}"


def contact_sheet(rows: list[Row], best: Row | None, prompts: list[str], *, cell: int = 160) -> Image.Image:
    """One row per checkpoint (base model first), one column per prompt and seed, labelled."""
    columns = max(1, len(prompts))
    label_width, gap = 220, 4
    font = load_font(14)
    sheet = Image.new("RGB", (label_width + columns * (cell + gap), len(rows) * (cell + gap)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top = r * (cell + gap)
        label = f"{'* ' if row is best else ''}{row.name}\ncombined {_fmt(row.combined) or '-'}"
        if row.note:
            label += f"\n{row.note[:28]}"
        draw.multiline_text((8, top + 8), label, fill=(255, 220, 120) if row is best else (230, 230, 230), font=font)
        for c, render in enumerate(row.renders[:columns]):
            sheet.paste(render.convert("RGB").resize((cell, cell)), (label_width + c * (cell + gap), top))
    return sheet

