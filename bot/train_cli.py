"""``python -m bot train-lora`` and ``python -m bot pick-checkpoint``: their flags, and the config edit.

Flags override the ``[train]`` / ``[pick]`` keys of config.toml (``bot/__main__.py`` runs the
commands and prints). ``pick-checkpoint --link``
writes the winner into the config file's ``[engine] lora``, so the bot draws with it next start.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path


log = logging.getLogger(__name__)

# flag attribute -> [train] key, for the flags that take a value
_TRAIN_KEYS = ("trigger", "steps", "checkpoint_every", "rank", "alpha", "dropout", "resolution", "learning_rate",
               "batch_size", "gradient_accumulation", "snr_gamma", "mixed_precision", "seed", "prior_loss_weight",
               "num_class_images")
_TRAIN_SWITCHES = ("train_text_encoder", "adam_8bit")


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train-lora", help="train a character LoRA on a folder of pictures (writes OUT/checkpoint-N)",
        description="Train a PEFT LoRA for SDXL on a folder of pictures of one character; each picture may have "
        "a caption .txt beside it. Flags override [train] in config.toml.")
    train.add_argument("--images", type=Path, required=True, metavar="DIR", help="the character's pictures")
    train.add_argument("--base-model", required=True, metavar="PATH_OR_ID", help="SDXL hub id or diffusers folder")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="where checkpoint-N folders go")
    train.add_argument("--trigger", metavar="TOKEN", help="the character's token (train.trigger)")
    train.add_argument("--steps", type=int, metavar="N", help="optimizer steps (train.steps)")
    train.add_argument("--checkpoint-every", type=int, metavar="K", help="checkpoint every K steps")
    train.add_argument("--rank", type=int, metavar="R", help="LoRA rank (train.rank)")
    train.add_argument("--alpha", type=float, metavar="A", help="LoRA alpha (train.alpha)")
    train.add_argument("--dropout", type=float, metavar="P", help="LoRA dropout (train.dropout)")
    train.add_argument("--resolution", type=int, metavar="PX", help="training square, a multiple of 8")
    train.add_argument("--learning-rate", type=float, metavar="LR", help="AdamW learning rate")
    train.add_argument("--batch-size", type=int, metavar="N", help="pictures per step")
    train.add_argument("--gradient-accumulation", type=int, metavar="N", help="micro-batches per step")
    train.add_argument("--snr-gamma", type=float, metavar="G", help="min-SNR gamma; 0 = plain MSE")
    train.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], help="train.mixed_precision")
    train.add_argument("--seed", type=int, help="train.seed")
    train.add_argument("--train-text-encoder", action="store_true", default=None, help="LoRAs on the text encoders too")
    train.add_argument("--adam-8bit", action="store_true", default=None, help="bitsandbytes' 8-bit AdamW (CUDA)")
    train.add_argument("--class-prompt", metavar="TEXT", help="DreamBooth prior preservation: the character's class")
    train.add_argument("--class-images", type=Path, metavar="DIR", help="class pictures (missing ones are drawn)")
    train.add_argument("--prior-loss-weight", type=float, metavar="W", help="weight of the class pictures' loss")
    train.add_argument("--num-class-images", type=int, metavar="N", help="class pictures to train beside")
    train.add_argument("--resume-from", type=Path, metavar="CHECKPOINT", help="continue from OUT/checkpoint-N")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    pick = commands.add_parser(
        "pick-checkpoint", help="score every checkpoint on a fixed validation set and name the best",
        description="Draw the [pick] prompts with every OUT/checkpoint-N, score identity (CLIP against the "
        "training pictures) and prompt fidelity (CLIP-T), and name the best. Writes checkpoints.csv and "
        "checkpoints.png into OUT.")
    pick.add_argument("out", type=Path, metavar="OUT", help="the train-lora output folder")
    pick.add_argument("--base-model", required=True, metavar="PATH_OR_ID", help="SDXL hub id or diffusers folder")
    pick.add_argument("--clip-model", metavar="PATH_OR_ID", help="CLIP for scoring (default engine.clip_model)")
    pick.add_argument("--images", type=Path, metavar="DIR", help="training pictures (default: from the checkpoint)")
    pick.add_argument("--trigger", metavar="TOKEN", help="the character's token (default: from the checkpoint)")
    pick.add_argument("--link", action="store_true", help="set the best checkpoint as [engine] lora in the config")
    pick.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to render")


def train_overrides(args: argparse.Namespace) -> dict[str, object]:
    values: dict[str, object] = {key: getattr(args, key) for key in _TRAIN_KEYS if getattr(args, key, None) is not None}
    values.update({key: True for key in _TRAIN_SWITCHES if getattr(args, key, None)})
    return values


_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")
_LORA_LINE = re.compile(r"^(\s*lora\s*=\s*)(\"(?:[^\"\\]|\\.)*\"|'[^']*')(.*)$")


def set_engine_lora(path: Path, value: str) -> None:
    """Set ``[engine] lora`` in a TOML config, keeping every other line and comment as it was."""
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    section, engine_at, done = None, None, False
    for i, line in enumerate(lines):
        header = _SECTION.match(line)
        if header:
            section = header.group(1).strip()
            if section == "engine":
                engine_at = i
            continue
        match = _LORA_LINE.match(line) if section == "engine" else None
        if match:
            lines[i] = f"{match.group(1)}{quoted}{match.group(3)}"
            done = True
            break
    if not done:
        if engine_at is None:
            lines += ["", "[engine]"]
            engine_at = len(lines) - 1
        lines.insert(engine_at + 1, f"lora = {quoted}  # set by pick-checkpoint --link")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("set [engine] lora in %s", path)
