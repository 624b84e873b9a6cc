"""Face-level identity: find the largest face in a frame, embed it, measure distances.

Everything runs offline on the CPU with weights that ship inside PyPI packages:

* ``dlib-bin`` - dlib's Python bindings as a prebuilt wheel (no cmake build);
* ``face-recognition-models`` - dlib's model files: the HOG detector is built into dlib,
  and this package adds the CNN (MMOD) face detector, the 5-point landmark model used for
  alignment, and the ResNet that maps an aligned face to a 128-d embedding.

The embedding is the one ``face_recognition`` computes, and distances are read the same
way: Euclidean, and <= 0.6 means "same person" (``MATCH_DISTANCE``).

Detection, in order of cost (each step runs only when the one before found nothing):

1. HOG at the image's own size (~15 ms for 512x512, ~60 ms for 1024x1024);
2. HOG with one 2x upsample, only when the image is small (shorter side < ``upsample_below``);
3. the CNN detector on a copy scaled to ``cnn_max_side`` (~1 s on one CPU core). It finds
   faces HOG misses (turned or tilted heads), and is what makes "no face" slow. It is
   skipped when the scaled copy's shorter side is under ``CNN_MIN_SIDE``: dlib's CNN raises
   or corrupts the heap on inputs of a few pixels.

``face_recognition_models/__init__.py`` imports ``pkg_resources``, which a venv without
setuptools lacks, so the model folder is located with ``importlib.util.find_spec`` and
that module is never executed.

dlib is imported inside ``FaceIdentity.__init__``, never at module import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import EngineError

log = logging.getLogger(__name__)

MATCH_DISTANCE = 0.6  # face_recognition's tolerance: a distance at or below it is the same person
EMBEDDING_SIZE = 128
MODEL_PACKAGE = "face_recognition_models"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
ENCODER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
CNN_MIN_SIDE = 64  # below ~10 px dlib 20's CNN detector errors out or corrupts the heap (measured)
INSTALL_HINT = "pip install -r requirements.txt (dlib-bin and face-recognition-models)"


class FaceModelError(EngineError):
    """dlib or the face models are missing or unreadable; the message says which and how to fix it."""


@dataclass(frozen=True)
class FaceBox:
    """A face's box in pixel coordinates of the image it was found in; right/bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    def __post_init__(self) -> None:
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError(f"empty face box: {self}")

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return self.width * self.height

    def crop(self, image: Image.Image, margin: float = 0.25) -> Image.Image:
        """The face plus ``margin`` times its size on each side, clipped to the image."""
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        dx, dy = round(self.width * margin), round(self.height * margin)
        width, height = image.size
        box = (
            max(0, self.left - dx),
            max(0, self.top - dy),
            min(width, self.right + dx),
            min(height, self.bottom + dy),
        )
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"face box {self} lies outside the {width}x{height} image")
        return image.crop(box)

    def to_json(self) -> dict[str, int]:
        return {"left": self.left, "top": self.top, "right": self.right, "bottom": self.bottom}


@dataclass(frozen=True)
class FaceScore:
    """One image against a reference: ``distance`` is None when no face was found."""

    found: bool
    distance: float | None = None
    box: FaceBox | None = None

    @property
    def matches(self) -> bool:
        return self.distance is not None and self.distance <= MATCH_DISTANCE


@dataclass(frozen=True)
class FaceRecord:
    """What one face check made of one picture: its largest face (None: it looked and found
    none) and that face's embedding; which face models with which detector settings looked
    (``FaceIdentity.signature``); and a digest of the picture's pixels. Kept in report.json for
    the frame a board keeps, so a later eval with the same models, of the same pixels (a frame
    file replaced since is looked at afresh), reuses it instead of detecting again."""

    model: str
    pixels: str
    box: FaceBox | None = None
    embedding: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.box is None) != (self.embedding is None):
            raise ValueError("a face record has both a box and an embedding, or neither")
        if self.embedding is not None and len(self.embedding) != EMBEDDING_SIZE:
            raise ValueError(f"a face embedding has {EMBEDDING_SIZE} values, got {len(self.embedding)}")

    @classmethod
    def of(cls, model: str, image: Image.Image, box: FaceBox | None, embedding: np.ndarray | None) -> FaceRecord:
        values = None if embedding is None else tuple(round(float(v), 6) for v in embedding)
        return cls(model=model, pixels=pixels_digest(image), box=box, embedding=values)

    def describes(self, model: str, image: Image.Image) -> bool:
        """Made by face models of this ``model`` signature, of exactly these pixels."""
        return self.model == model and self.pixels == pixels_digest(image)

    @property
    def array(self) -> np.ndarray | None:
        return None if self.embedding is None else np.asarray(self.embedding, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "pixels": self.pixels, "box": self.box.to_json() if self.box else None,
                "embedding": list(self.embedding) if self.embedding is not None else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaceRecord:
        box = data.get("box")
        embedding = data.get("embedding")
        return cls(model=str(data["model"]), pixels=str(data["pixels"]), box=FaceBox(**box) if box else None,
                   embedding=tuple(float(v) for v in embedding) if embedding is not None else None)


def pixels_digest(image: Image.Image) -> str:
    """A digest of a picture's size and RGB pixels: the same for a frame and its PNG file."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()[:32]


def find_model_dir() -> Path:
    """The installed face-recognition-models folder, found without importing the package."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError(f"the face models are not installed ({MODEL_PACKAGE} not found); {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceIdentity:
    """dlib's detectors, landmark model and face encoder, loaded once (about 0.3 s).

    Not thread-safe: use one instance from one thread (the engine's GPU thread does).
    """

    def __init__(
        self,
        *,
        models_dir: str | Path | None = None,
        upsample_below: int = 640,
        cnn_fallback: bool = True,
        cnn_max_side: int = 512,
        jitters: int = 0,
    ) -> None:
        if upsample_below < 0 or cnn_max_side < 64 or jitters < 0:
            raise ValueError(
                f"need upsample_below >= 0, cnn_max_side >= 64, jitters >= 0; "
                f"got {upsample_below}, {cnn_max_side}, {jitters}"
            )
        try:
            import dlib
        except ImportError as exc:
            raise FaceModelError(f"dlib is not installed ({exc}); {INSTALL_HINT}") from exc

        started = time.perf_counter()
        folder = Path(models_dir) if models_dir is not None else find_model_dir()
        self.models_dir = folder
        self.upsample_below = upsample_below
        self.cnn_fallback = cnn_fallback
        self.cnn_max_side = cnn_max_side
        self.jitters = jitters
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._landmarks = _load(dlib.shape_predictor, folder / LANDMARKS_FILE)
        self._encoder = _load(dlib.face_recognition_model_v1, folder / ENCODER_FILE)
        self._cnn = _load(dlib.cnn_face_detection_model_v1, folder / CNN_DETECTOR_FILE) if cnn_fallback else None
        log.info(
            "loaded face models (dlib %s) from %s in %.2fs", dlib.__version__, folder, time.perf_counter() - started
        )

    def signature(self) -> str:
        """The face models and detector settings, as a face record names them: two records
        with one signature were made by the same computation."""
        detector = f"hog, 2x below {self.upsample_below}px" + (f", cnn at {self.cnn_max_side}px" if self._cnn else "")
        return f"dlib {self._dlib.__version__} ({detector}; jitters {self.jitters})"

    # -- detection -------------------------------------------------------------------------
    def find_face(self, image: Image.Image) -> FaceBox | None:
        """The largest face, or None when there is none (never raises for "no face")."""
        return self._find(_rgb_array(image))

    def _find(self, rgb: np.ndarray) -> FaceBox | None:
        height, width = rgb.shape[:2]
        rects = list(self._hog(rgb, 0))
        if not rects and min(width, height) < self.upsample_below:
            rects = list(self._hog(rgb, 1))
        boxes = [_clip(r.left(), r.top(), r.right() + 1, r.bottom() + 1, width, height) for r in rects]
        boxes = [b for b in boxes if b is not None]
        if not boxes and self._cnn is not None:
            boxes = [b for b in self._find_cnn(rgb) if b is not None]
        return max(boxes, key=lambda b: b.area) if boxes else None

    def _find_cnn(self, rgb: np.ndarray) -> list[FaceBox | None]:
        height, width = rgb.shape[:2]
        scale = min(2.0, self.cnn_max_side / max(width, height))
        if min(width, height) * scale < CNN_MIN_SIDE:
            return []  # dlib's CNN corrupts memory on tiny inputs, and no face it can see fits there
        scaled = rgb
        if abs(scale - 1.0) > 0.01:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            scaled = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        found = self._cnn(scaled, 0)
        return [
            _clip(
                round(d.rect.left() / scale),
                round(d.rect.top() / scale),
                round((d.rect.right() + 1) / scale),
                round((d.rect.bottom() + 1) / scale),
                width,
                height,
            )
            for d in found
        ]

    # -- embedding -------------------------------------------------------------------------
    def embed(self, image: Image.Image, box: FaceBox) -> np.ndarray:
        """The 128-d embedding of the face in ``box`` (aligned on 5 landmarks first)."""
        return self._embed(_rgb_array(image), box)

    def _embed(self, rgb: np.ndarray, box: FaceBox) -> np.ndarray:
        rect = self._dlib.rectangle(box.left, box.top, box.right - 1, box.bottom - 1)
        shape = self._landmarks(rgb, rect)
        descriptor = self._encoder.compute_face_descriptor(rgb, shape, self.jitters)
        return np.asarray(descriptor, dtype=np.float64)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance between two embeddings, as face_recognition.face_distance."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != (EMBEDDING_SIZE,) or b.shape != (EMBEDDING_SIZE,):
            raise ValueError(f"need two ({EMBEDDING_SIZE},) embeddings, got {a.shape} and {b.shape}")
        return float(np.linalg.norm(a - b))

    # -- what the validator calls ----------------------------------------------------------
    def compare(self, image: Image.Image, reference_embedding: np.ndarray) -> FaceScore:
        """Find the largest face and measure its distance to the reference; found=False if none."""
        rgb = _rgb_array(image)
        box = self._find(rgb)
        if box is None:
            return FaceScore(found=False)
        return FaceScore(found=True, distance=self.distance(self._embed(rgb, box), reference_embedding), box=box)

    def faces_in(self, images: Sequence[Image.Image]) -> list[tuple[FaceBox | None, np.ndarray | None]]:
        """Each image's largest face and its embedding; (None, None) where there is no face.
        One call for a batch: the validator's single round trip to the face-check process."""
        found: list[tuple[FaceBox | None, np.ndarray | None]] = []
        for image in images:
            rgb = _rgb_array(image)
            box = self._find(rgb)
            found.append((box, self._embed(rgb, box) if box is not None else None))
        return found

    def reference_embedding(self, images: Sequence[Image.Image]) -> np.ndarray | None:
        """Mean embedding of the faces found in ``images``; None when none has a face."""
        return mean_embedding([face for _, face in self.faces_in(images)])


def mean_embedding(embeddings: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The mean of the embeddings there are (None marks an image without a face); None if none."""
    found = [embedding for embedding in embeddings if embedding is not None]
    if not found:
        return None
    log.debug("face reference from %d of %d images", len(found), len(embeddings))
    return np.mean(found, axis=0)


def _load(loader: Any, path: Path) -> Any:
    if not path.is_file():
        raise FaceModelError(f"face model file missing: {path}; {INSTALL_HINT}")
    try:
        return loader(str(path))
    except RuntimeError as exc:  # dlib's "Unable to open ..." or "Error deserializing ..."
        raise FaceModelError(f"cannot read face model {path}: {exc}") from exc


def _clip(left: int, top: int, right: int, bottom: int, width: int, height: int) -> FaceBox | None:
    """A detector's box clipped to the image; None when nothing of it is inside."""
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, right), min(height, bottom)
    if right <= left or bottom <= top:
        return None
    return FaceBox(left, top, right, bottom)


def _rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL image as a C-contiguous HxWx3 uint8 array (what dlib wants).

    RGBA/LA/P-with-transparency are put on white, as a viewer shows them; 16-bit and float
    grayscale is rescaled to 0..255 rather than clipped.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"need a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"empty image: {image.width}x{image.height}")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
