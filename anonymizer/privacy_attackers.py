"""Re-ID models as matchers for the privacy evaluation, and scoring them on the test split.

Three kinds of matcher, one interface (``embed(images) -> L2-normalised [N, D] features``, images
N×H×W×3 RGB uint8 at the working size):

* :class:`BundleMatcher`: the bundle's own C (the *authorized* matcher);
* :class:`OnnxMatcher` / :class:`OpenVinoMatcher`: an outside Re-ID model, e.g. OSNet x0.25
  trained on MSMT17 (``reid_models/README.md``): RGB at the model's input size (256×128 when the
  graph does not fix one), ``x/255``, ImageNet mean/std, NCHW float32;
* :class:`TorchMatcher`: a PyTorch :class:`reid.models.ReidModel` in eval mode (the adaptive
  attacker after fine-tuning), fed ImageNet-normalised images at the working size; its ONNX
  backbone resizes them bilinearly to the graph's input, as ``cv2.INTER_LINEAR`` does for the
  outside models (both use pixel-centre sampling), so before fine-tuning it ranks like them.

The outside models run on a :mod:`backends` runtime (ONNX Runtime for ``.onnx``, OpenVINO for
``.xml``) on the CPU, with the project's one preprocessing (:func:`backends.preprocess.to_nchw`).

Scoring follows :mod:`reid.metrics` (Euclidean distance on L2-normalised features, i.e. cosine
ranking; same-identity-same-camera gallery entries excluded).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from backends import BackendError, load_backend
from backends.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_nchw
from reid.metrics import evaluate_features

log = logging.getLogger(__name__)

DEFAULT_ATTACKER_HW = (256, 128)
KEEP_METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP", "num_queries")


class AttackerModelError(ValueError):
    """An attacker model file is missing, of an unknown format, or not an image → embedding model."""


class Matcher(Protocol):
    name: str
    input_hw: tuple[int, int]

    def embed(self, images: np.ndarray) -> np.ndarray: ...


def _l2(feats: np.ndarray) -> np.ndarray:
    feats = feats.reshape(len(feats), -1).astype(np.float32)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def imagenet_batch(images: np.ndarray, size_hw: tuple[int, int] | None) -> np.ndarray:
    """RGB uint8 N×H×W×3 → ImageNet-normalised N×3×h×w float32 (resized to ``size_hw`` when given)."""
    return to_nchw(images, size_hw, IMAGENET_MEAN, IMAGENET_STD, order="rgb", interpolation="linear")


def _batched(images: np.ndarray, batch: int, fn, desc: str) -> np.ndarray:
    from tqdm import tqdm

    outs = [
        fn(images[s : s + batch])
        for s in tqdm(range(0, len(images), batch), desc=desc, leave=False, mininterval=2.0, disable=None)
    ]
    return _l2(np.concatenate(outs, 0)) if outs else np.zeros((0, 1), np.float32)


class BundleMatcher:
    """The bundle's C (``embed_unit``): the authorized Re-ID model."""

    def __init__(self, bundle, batch: int = 128) -> None:
        self.bundle, self.batch, self.name = bundle, batch, "bundle C"
        self.input_hw = bundle.input_hw

    def embed(self, images: np.ndarray) -> np.ndarray:
        from anonymizer.privacy_data import to_unit

        return _batched(images, self.batch, lambda b: self.bundle.embed_unit(to_unit(b)), "C features")


class BackendMatcher:
    """An outside Re-ID model file on a runtime backend (CPU, full precision)."""

    backend = "onnxruntime"
    kind = "ONNX"

    def __init__(self, path: str | Path, threads: int = 1, batch: int = 64, name: str | None = None) -> None:
        self.path = Path(path)
        try:
            self.net = load_backend(self.backend, self.path, "cpu", threads=max(1, int(threads)))
        except BackendError as exc:
            raise AttackerModelError(f"{self.path}: not a loadable {self.kind} model ({exc})") from exc
        shape = self.net.input_shape
        if shape is not None and len(shape) != 4:
            raise AttackerModelError(f"{self.path}: expected an image input [N, 3, H, W], got {list(shape)}")
        self.input_hw = self.net.fixed_hw or DEFAULT_ATTACKER_HW
        self.batch = 1 if shape is not None and shape[0] == 1 else batch
        self.name = name or attacker_name(self.path)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return _batched(images, self.batch, lambda b: self.net(imagenet_batch(b, self.input_hw)), self.name)


class OnnxMatcher(BackendMatcher):
    """An outside Re-ID model in ONNX Runtime (RGB at the model's size, ImageNet mean/std)."""


class OpenVinoMatcher(BackendMatcher):
    """An outside Re-ID model as OpenVINO IR (``.xml`` + ``.bin``), same preprocessing as ONNX."""

    backend = "openvino"
    kind = "OpenVINO IR"


class TorchMatcher:
    """A torch Re-ID model in eval mode on ImageNet-normalised images at the working size."""

    def __init__(self, model, name: str, batch: int = 64) -> None:
        self.model, self.name, self.batch = model, name, batch
        self.input_hw = (0, 0)  # any size: the model resizes internally

    def embed(self, images: np.ndarray) -> np.ndarray:
        net = load_backend("torch", self.model, "cpu")  # (again each time: eval mode after fine-tuning steps)
        return _batched(images, self.batch, lambda b: net(imagenet_batch(b, None)), self.name)


def attacker_name(path: Path) -> str:
    """A short, stable label: ``<parent folder>/<file stem>`` (the two OSNet exports share a stem)."""
    return f"{path.parent.name}/{path.stem}"


def load_attacker(path: str | Path, threads: int = 1) -> Matcher:
    """An outside Re-ID matcher from an ONNX (``.onnx``) or OpenVINO IR (``.xml``) file."""
    path = Path(path)
    if not path.is_file():
        raise AttackerModelError(f"attacker model {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxMatcher(path, threads)
    if suffix == ".xml":
        if not path.with_suffix(".bin").is_file():
            raise AttackerModelError(
                f"OpenVINO IR {path} has no weights file {path.with_suffix('.bin').name} beside it"
            )
        return OpenVinoMatcher(path, threads)
    raise AttackerModelError(f"attacker model {path}: unknown format '{suffix}' (expected .onnx or OpenVINO .xml)")


def score(qf: np.ndarray, gf: np.ndarray, split) -> dict:
    """Rank-k / mAP / mINP of query features against gallery features on ``split``'s labels."""
    r = evaluate_features(qf, gf, split.q_pids, split.q_cams, split.g_pids, split.g_cams, normalize=True)
    return {k: r[k] for k in KEEP_METRICS}


def evaluate_matcher(
    matcher: Matcher,
    split,
    raw_q: np.ndarray,
    raw_g: np.ndarray,
    prot_q: np.ndarray,
    prot_g: np.ndarray,
    settings: Sequence[str],
) -> dict[str, dict]:
    """Score ``matcher`` in the given settings (``raw->raw``, ``raw->protected``, ...).

    ``raw_q``/``raw_g`` may be precomputed feature arrays (2-D) or images (4-D); features are
    computed only for what the settings need.
    """
    feats: dict[str, np.ndarray] = {}
    sources = {"raw_q": raw_q, "raw_g": raw_g, "protected_q": prot_q, "protected_g": prot_g}

    def get(key: str) -> np.ndarray:
        if key not in feats:
            x = sources[key]
            feats[key] = x if x.ndim == 2 else matcher.embed(x)
        return feats[key]

    out = {}
    for setting in settings:
        q, g = setting.split("->")
        out[setting] = score(get(f"{q}_q"), get(f"{g}_g"), split)
    return out
