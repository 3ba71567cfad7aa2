"""The one Re-ID feature extractor interface of the project (torchreid-style).

The pipeline calls an extractor on *protected* crops only and publishes what it returns; the
matching service compares those vectors by cosine similarity. Anything that follows
:class:`FeatureExtractor` works: today an ONNX model (:class:`OnnxFeatureExtractor`, e.g. the
third-party OSNet export used by the tests), later the project's own trained models, plugged in
through :func:`register_loader` without touching the pipeline or the service.

``fingerprint`` (sha256 of the model file) travels with every published feature, so a consumer can
refuse to compare vectors from different models: they live in different spaces.

The network runs on a :mod:`backends` runtime (ONNX Runtime by default, OpenVINO or TensorRT on
request) with the project's one device convention, and crops are prepared by
:func:`backends.preprocess.to_nchw` with torchreid's conventions (bilinear resize, ImageNet mean/std).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from backends import BackendError, load_backend
from backends.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_nchw
from privreid.hashing import sha256_file  # re-exported: callers import it from here

log = logging.getLogger(__name__)


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


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def preprocess(
    crops: Sequence[np.ndarray], input_size_hw: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """BGR uint8 crops to the NCHW float32 batch torchreid models expect (RGB, resize, /255, mean/std)."""
    for i, crop in enumerate(crops):
        if crop is None or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] == 0 or crop.shape[1] == 0:
            shape = None if crop is None else crop.shape
            raise ValueError(f"crop {i} must be a non-empty BGR image HxWx3, got shape {shape}")
    return to_nchw(crops, input_size_hw, mean, std, order="bgr", interpolation="linear")


class OnnxFeatureExtractor:
    """A :class:`FeatureExtractor` running an ONNX model on a runtime backend, in batches.

    Args:
        path: ``.onnx`` file with one input ``[batch, 3, H, W]`` and one output ``[batch, dim]``.
        input_size_hw: network input (H, W); torchreid models use (256, 128). A size the model fixes wins.
        mean, std: per-channel RGB normalisation (ImageNet by default).
        batch_size: crops per inference call (bounded memory for crowded frames).
        num_threads: intra-op threads (``None`` = the runtime's default).
        backend: a :data:`backends.BACKENDS` runtime that reads ONNX (``onnxruntime``, ``openvino``, ``tensorrt``).
        device: ``auto | cpu | cuda | cuda:N`` (:func:`backends.parse_device`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        input_size_hw: tuple[int, int] = (256, 128),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 32,
        num_threads: int | None = None,
        backend: str = "onnxruntime",
        device: str = "cpu",
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"Re-ID model not found: {self.path}")
        self.input_size_hw = (int(input_size_hw[0]), int(input_size_hw[1]))
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = max(1, int(batch_size))
        self.fingerprint = sha256_file(self.path)
        options = {"threads": int(num_threads)} if num_threads else {}
        try:
            self._net = load_backend(backend, self.path, device, **options)
        except BackendError as exc:
            raise ValueError(f"cannot load Re-ID model {self.path} with {backend}: {exc}") from exc
        net = self._net
        if len(net.input_names) != 1 or len(net.output_names) < 1:
            got = f"{len(net.input_names)} and {len(net.output_names)}"
            raise ValueError(f"{self.path}: expected one input and one output, got {got}")
        shape = net.input_shape
        if shape is None or len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.path}: input {net.input_names[0]} has shape {shape}, expected [batch, 3, H, W]")
        fixed_hw = net.fixed_hw
        if fixed_hw is not None and fixed_hw != self.input_size_hw:
            log.info("%s expects %s input; using it instead of %s", self.path.name, fixed_hw, self.input_size_hw)
            self.input_size_hw = fixed_hw
        out_dim = net.output_shape[-1] if net.output_shape else None
        if out_dim is not None:
            self.dim = int(out_dim)
        else:  # symbolic output size: ask the model once
            self.dim = int(net(np.zeros((1, 3, *self.input_size_hw), dtype=np.float32)).shape[-1])
        log.info(
            "Re-ID extractor %s: %d-d, input %dx%d, %s on %s, sha256 %s…",
            self.path.name,
            self.dim,
            self.input_size_hw[0],
            self.input_size_hw[1],
            net.name,
            net.device,
            self.fingerprint[:12],
        )

    def __call__(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = preprocess(crops[start : start + self.batch_size], self.input_size_hw, self.mean, self.std)
            feats = self._net(batch)
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
