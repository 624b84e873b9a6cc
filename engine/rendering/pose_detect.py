"""``pose_source = "detect"``: poses taken from pictures with the OpenPose body detector.

An operator puts a picture per pose in ``engine.pose_images``, named after the pose it shows
(``riding.png``, ``arms_crossed.jpg``). At start-up controlnet_aux's OpenPose body network
finds the figure in each picture, once, and its 18 keypoints become that pose's template; the
shots then place and draw it for their framing exactly like a built-in template. Poses with
no picture keep the built-in template. Only the body network is loaded (hands and faces are
not drawn), from ``engine.pose_detector``: a hub id holding ``body_pose_model.pth``, a folder
with that file, or the ``.pth`` file itself.

controlnet_aux and torch are imported inside the functions, so nothing here loads unless
detection is configured.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.images import describe_suffixes, pictures_in
from engine.rendering.poses import TEMPLATES, NoPoseFound, PoseLibrary, PoseTemplate, pose_key, template_from_keypoints

log = logging.getLogger(__name__)

BODY_WEIGHTS = "body_pose_model.pth"
DETECT_LONG_SIDE = 512  # pictures are scaled so their long side is this before detection


class PoseImagesError(ValueError):
    """The pose pictures cannot be used; the message names the files and what to do."""


def body_weights_path(source: str) -> str:
    """The ``.pth`` file for a local folder or file, or the hub download (cache first) for a repo id."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / BODY_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"{BODY_WEIGHTS} not found in {source}")
        return str(path)
    if path.is_file():
        return str(path)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(source, BODY_WEIGHTS)


def load_body_detector(source: str, device: Any) -> Any:
    """controlnet_aux's OpenposeDetector with only the body network, on ``device``."""
    with warnings.catch_warnings():  # its package import registers every annotator: timm/mediapipe notices
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        from controlnet_aux.open_pose import OpenposeDetector
        from controlnet_aux.open_pose.body import Body

    body = Body(body_weights_path(source)).to(device)
    return OpenposeDetector(body)


def detect_keypoints(detector: Any, picture: Image.Image) -> list[tuple[float, float] | None]:
    """The 18 keypoints (pixels of ``picture``) of the most complete body in it, or NoPoseFound."""
    rgb = picture.convert("RGB")
    scale = min(1.0, DETECT_LONG_SIDE / max(rgb.size))
    small = rgb.resize((max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale))), Image.LANCZOS)
    bodies = detector.detect_poses(np.asarray(small, dtype=np.uint8))
    if not bodies:
        raise NoPoseFound("no body found")
    best = max(bodies, key=lambda pose: (sum(k is not None for k in pose.body.keypoints), pose.body.total_score))
    return [None if k is None else (float(k.x) * rgb.width, float(k.y) * rgb.height) for k in best.body.keypoints]


def pose_pictures(folder_value: str) -> dict[str, Path]:
    """Pose name -> picture, from the files in the folder; names that are no pose are refused."""
    folder = Path(folder_value).expanduser()
    if not folder_value or not folder.is_dir():
        raise PoseImagesError(f"engine.pose_images: folder not found: {folder_value or '(not set)'}; "
                              "pose_source = 'detect' needs a folder with a picture per pose")
    files = pictures_in(folder)
    if not files:
        raise PoseImagesError(f"engine.pose_images: no {describe_suffixes()} pictures in {folder}")
    pictures: dict[str, Path] = {}
    unknown: list[str] = []
    for path in files:
        name = pose_key(path.stem)
        if name not in TEMPLATES:
            unknown.append(path.name)
        elif name in pictures:
            raise PoseImagesError(f"engine.pose_images: two pictures for {name!r}: {pictures[name].name}, {path.name}")
        else:
            pictures[name] = path
    if unknown:
        known = ", ".join(name.replace(" ", "_") for name in TEMPLATES)
        raise PoseImagesError(f"engine.pose_images: {', '.join(unknown)} in {folder} name no pose; "
                              f"name each picture after one of: {known}")
    return pictures


def build_pose_library(pictures: dict[str, Path], detector: Any) -> PoseLibrary:
    """Detect the figure in every picture; any picture without a usable body stops start-up."""
    detected: dict[str, tuple[PoseTemplate, str]] = {}
    failures: list[str] = []
    for name, path in pictures.items():
        try:
            with Image.open(path) as picture:
                template = template_from_keypoints(name, detect_keypoints(detector, picture))
        except NoPoseFound as exc:
            failures.append(f"{path.name}: {exc}")
            continue
        except OSError as exc:
            failures.append(f"{path.name}: unreadable ({exc})")
            continue
        detected[name] = (template, path.name)
        log.info("pose %r detected in %s", name, path.name)
    if failures:
        raise PoseImagesError("engine.pose_images: no usable pose in " + "; ".join(failures)
                              + " (use a picture with one whole, clearly visible figure)")
    return PoseLibrary(detected)
