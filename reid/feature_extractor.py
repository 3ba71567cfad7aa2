"""The one Re-ID feature extractor interface of the project (torchreid-style).

The pipeline calls an extractor on *protected* crops only and publishes what it returns; the
matching service compares those vectors by cosine similarity. Anything that follows
:class:`FeatureExtractor` works: today an ONNX model (:class:`OnnxFeatureExtractor`, e.g. the
third-party OSNet export used by the tests), later the project's own trained models, plugged in
through :func:`register_loader` without touching the pipeline or the service.

``fingerprint`` (sha256 of the model file) travels with every published feature, so a consumer can
refuse to compare vectors from different models: they live in different spaces.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps person crops to L2-normalised embeddings.

    Attributes:
        dim: embedding dimension.
        fingerprint: sha256 hex digest of the model file (identifies the embedding space).
    """

    dim: int
    fingerprint: str

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """BGR uint8 crops of any size -> float32 ``[N, dim]``, each row of unit L2 norm."""
        ...


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def preprocess(
    crops: Sequence[np.ndarray], input_size_hw: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """BGR uint8 crops to the NCHW float32 batch torchreid models expect (RGB, resize, /255, mean/std)."""
    h, w = input_size_hw
    batch = np.empty((len(crops), 3, h, w), dtype=np.float32)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    for i, crop in enumerate(crops):
        if crop is None or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] == 0 or crop.shape[1] == 0:
            shape = None if crop is None else crop.shape
            raise ValueError(f"crop {i} must be a non-empty BGR image HxWx3, got shape {shape}")
        img = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 / 255.0)
        batch[i] = (img.transpose(2, 0, 1) - mean_a) / std_a
    return batch


class OnnxFeatureExtractor:
    """A :class:`FeatureExtractor` running an ONNX model with ONNX Runtime, in batches.

    Args:
        path: ``.onnx`` file with one input ``[batch, 3, H, W]`` and one output ``[batch, dim]``.
        input_size_hw: network input (H, W); torchreid models use (256, 128).
        mean, std: per-channel RGB normalisation (ImageNet by default).
        providers: ONNX Runtime execution providers (default: CPU).
        batch_size: crops per inference call (bounded memory for crowded frames).
        num_threads: intra-op threads (``None`` = ONNX Runtime's default).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        input_size_hw: tuple[int, int] = (256, 128),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        providers: Sequence[str] | None = None,
        batch_size: int = 32,
        num_threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"Re-ID model not found: {self.path}")
        self.input_size_hw = (int(input_size_hw[0]), int(input_size_hw[1]))
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = max(1, int(batch_size))
        self.fingerprint = sha256_file(self.path)
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception classes
            raise ValueError(f"cannot load Re-ID model {self.path} with ONNX Runtime: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ValueError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._input = inputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ValueError(f"{self.path}: input {self._input} has shape {shape}, expected [batch, 3, H, W]")
        fixed_hw = tuple(s for s in shape[2:] if isinstance(s, int))
        if len(fixed_hw) == 2 and fixed_hw != self.input_size_hw:
            log.info("%s expects %s input; using it instead of %s", self.path.name, fixed_hw, self.input_size_hw)
            self.input_size_hw = (fixed_hw[0], fixed_hw[1])
        out_dim = outputs[0].shape[-1]
        if isinstance(out_dim, int):
            self.dim = out_dim
        else:  # symbolic output size: ask the model once
            probe = np.zeros((1, 3, *self.input_size_hw), dtype=np.float32)
            self.dim = int(self._session.run(None, {self._input: probe})[0].shape[-1])
        log.info(
            "Re-ID extractor %s: %d-d, input %dx%d, sha256 %s…",
            self.path.name,
            self.dim,
            self.input_size_hw[0],
            self.input_size_hw[1],
            self.fingerprint[:12],
        )

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = preprocess(crops[start : start + self.batch_size], self.input_size_hw, self.mean, self.std)
            feats = self._session.run(None, {self._input: batch})[0]
            out.append(np.asarray(feats, dtype=np.float32).reshape(len(batch), -1))
        feats = np.concatenate(out, axis=0)
        if not np.isfinite(feats).all():
            raise ValueError(f"Re-ID model {self.path.name} produced non-finite features")
        return l2_normalize(feats)

    def __repr__(self) -> str:
        return f"OnnxFeatureExtractor({self.path.name}, dim={self.dim}, sha256={self.fingerprint[:12]}…)"


# ---------------------------------------------------------------------------------------------
# Loaders: ONNX now; the project's trained models register themselves here later.

Loader = Callable[[Path], FeatureExtractor]
_LOADERS: list[tuple[Callable[[Path], bool], Loader]] = []


def register_loader(matches: Callable[[Path], bool], loader: Loader) -> None:
    """Hook for new model formats (e.g. a trained model bundle): the first matching loader wins.

    A learned bundle will register ``(lambda p: (p / "manifest.json").is_file(), load_bundle_reid)``
    from its own module; nothing else changes.
    """
    _LOADERS.insert(0, (matches, loader))


register_loader(lambda p: p.suffix.lower() == ".onnx", lambda p: OnnxFeatureExtractor(p))


def load_feature_extractor(path: str | os.PathLike[str]) -> FeatureExtractor:
    """The extractor for the model at ``path`` (``.onnx`` today); clear errors for anything else."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Re-ID model not found: {p}")
    for matches, loader in _LOADERS:
        if matches(p):
            extractor = loader(p)
            if not isinstance(extractor, FeatureExtractor):
                raise TypeError(f"loader for {p} returned {type(extractor).__name__}, not a FeatureExtractor")
            return extractor
    raise ValueError(
        f"no Re-ID loader for {p}: expected an ONNX file (.onnx); trained model bundles "
        "plug in through reid.feature_extractor.register_loader"
    )
