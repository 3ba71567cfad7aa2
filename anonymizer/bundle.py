"""Model bundles of the learned anonymizer: format, writer and :func:`load_bundle`.

A bundle is a folder the pipeline, the exporters and the recovery tool all read::

    bundle.yaml        what it is: input size, normalization, desensitization, dataset, metrics,
                       generator / Re-ID specs and the sha256 of every other file
    G.safetensors      anonymization encoder G (public: it only ever makes images less identifiable)
    C.safetensors      Re-ID model C (one model for raw and protected crops)
    G_R.sealed         recovery decoder G_R, AES-256-GCM encrypted (see anonymizer.crypto): whoever
                       holds G_R can undo the anonymization, so it is a secret
    G.onnx, C.onnx     the same G and C for the onnxruntime / OpenVINO / TensorRT backends
                       (dynamic batch, fixed image size)

    bundle.sig         optional detached Ed25519 signature of the manifest (anonymizer.bundle_signing)

Every listed file is checked against its sha256 on load, so a swapped weight file fails loudly
instead of silently changing what the pipeline publishes. The file hashes sit in bundle.yaml, so
they prove nothing by themselves: the manifest hash (:func:`manifest_sha256`, over the whole parsed
bundle.yaml: specs, normalization, sizes, desensitization, privacy bound, file hashes) is what a
signature covers, and every load also runs G on built-in canaries (:mod:`anonymizer.canary`) so that
an edited, unsigned spec cannot pass raw people off as protected. Loading never unpickles:
safetensors and ONNX only.

Image conventions: crops come in as BGR uint8 of any size. G and G_R work on RGB images at the
bundle's input size scaled to [-1, 1]; C sees RGB images normalized with the bundle's mean/std.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "privreid-anonymizer-bundle"
BUNDLE_VERSION = 1
BUNDLE_YAML = "bundle.yaml"
SIGNATURE_FIELDS = ("signature",)  # never part of the manifest (a signature cannot cover itself)
G_FILE, C_FILE, GR_FILE = "G.safetensors", "C.safetensors", "G_R.sealed"
G_ONNX, C_ONNX = "G.onnx", "C.onnx"
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
DEFAULT_BATCH = 32


class BundleError(RuntimeError):
    """A bundle is missing, malformed, or one of its files does not match its recorded sha256."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- pre/post-processing
def _as_bgr3(crop: np.ndarray) -> np.ndarray:
    if crop.dtype != np.uint8:
        raise TypeError(f"crops must be uint8, got {crop.dtype}")
    if crop.ndim == 2:
        return cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    if crop.ndim == 3 and crop.shape[2] == 3:
        return crop
    if crop.ndim == 3 and crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"crops must be H×W×3 BGR (or grey) images, got shape {crop.shape}")


def crops_to_unit_batch(crops: Sequence[np.ndarray], size_hw: tuple[int, int]) -> np.ndarray:
    """BGR uint8 crops of any size → N×3×H×W float32 RGB on [0, 1] at ``size_hw``."""
    h, w = size_hw
    out = np.empty((len(crops), 3, h, w), dtype=np.float32)
    for i, crop in enumerate(crops):
        img = _as_bgr3(crop)
        ch, cw = img.shape[:2]
        interp = cv2.INTER_AREA if (ch > h and cw > w) else cv2.INTER_LINEAR
        img = cv2.resize(img, (w, h), interpolation=interp)
        out[i] = img[:, :, ::-1].transpose(2, 0, 1) / 255.0
    return out


def unit_batch_to_crops(batch: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """N×3×H×W RGB on [0, 1] → BGR uint8 crops resized to the shapes of ``like``."""
    out = []
    for img, ref in zip(batch, like, strict=True):
        bgr = np.ascontiguousarray(
            (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1]
        )
        rh, rw = ref.shape[:2]
        if bgr.shape[:2] != (rh, rw):
            interp = cv2.INTER_AREA if (rh < bgr.shape[0] and rw < bgr.shape[1]) else cv2.INTER_LINEAR
            bgr = cv2.resize(bgr, (rw, rh), interpolation=interp)
        if ref.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        out.append(bgr)
    return out


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# ------------------------------------------------------------------------------------- backends
class _Runner:
    """Runs G (on [-1, 1] images) and C (on normalized images) for one backend."""

    name = "base"
    g: Any
    c: Any

    def _run(self, net, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """Run one of the backend's two networks (``self.g`` or ``self.c``) on a float32 batch."""
        raise NotImplementedError

    def run_g(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.g, x)

    def run_c(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.c, x)


class _TorchRunner(_Runner):
    name = "torch"

    def __init__(self, g, c, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.g = g.to(self.device).eval() if g is not None else None
        self.c = c.to(self.device).eval() if c is not None else None

    def _run(self, net, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            y = net(self.torch.from_numpy(x).to(self.device))
            if isinstance(y, (tuple, list)):
                y = y[0]
            return y.float().cpu().numpy()


class _OnnxRuntimeRunner(_Runner):
    name = "onnxruntime"

    def __init__(self, g_onnx: Path, c_onnx: Path, device: str) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            idx = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.g = ort.InferenceSession(str(g_onnx), opts, providers=providers)
        self.c = ort.InferenceSession(str(c_onnx), opts, providers=providers)

    @staticmethod
    def _run(sess, x: np.ndarray) -> np.ndarray:
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]


class _OpenVinoRunner(_Runner):
    name = "openvino"

    def __init__(self, g_onnx: Path, c_onnx: Path, device: str) -> None:
        import openvino as ov

        core = ov.Core()
        # OpenVINO's "GPU" is an Intel GPU; a CUDA device name means nothing to it, so it runs on the CPU.
        target = "GPU" if device.upper().startswith("GPU") else "CPU"
        # G in full precision: on CPUs with bf16, OpenVINO (2026.4) runs G in bf16 by default, which costs about a
        # grey level and hung outright on the wide depthwise blur convolutions of blur-skip/payload generators
        self.g = core.compile_model(core.read_model(str(g_onnx)), target, {"INFERENCE_PRECISION_HINT": "f32"})
        self.c = core.compile_model(core.read_model(str(c_onnx)), target)

    def _run(self, compiled, x: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(x)[compiled.output(0)])


class _TensorRTRunner(_Runner):
    """TensorRT engines built from the bundle's ONNX files, cached next to the bundle.

    UNTESTED HERE: written against TensorRT's official Python API (10.x: ``Builder``,
    ``OnnxParser``, optimization profile for the dynamic batch, ``execute_async_v3`` with tensor
    addresses) but this project's development machines have no TensorRT. Buffers are torch CUDA
    tensors, so torch with CUDA is needed as well.
    """

    name = "tensorrt"
    MAX_BATCH = 64

    def __init__(self, g_onnx: Path, c_onnx: Path, device: str, cache_dir: Path) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BundleError(
                "backend 'tensorrt' needs the 'tensorrt' Python package (NVIDIA TensorRT), "
                "which is not installed; use backend 'onnxruntime' or 'torch' instead"
            ) from exc
        import torch

        if not torch.cuda.is_available():
            raise BundleError("backend 'tensorrt' needs a CUDA GPU visible to torch")
        self.trt, self.torch = trt, torch
        self.device = torch.device(device if device.startswith("cuda") else "cuda:0")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.g = self._engine(g_onnx, cache_dir)
        self.c = self._engine(c_onnx, cache_dir)

    def _engine(self, onnx_path: Path, cache_dir: Path):
        trt = self.trt
        gpu = self.torch.cuda.get_device_name(self.device).replace(" ", "_")
        tag = f"{sha256_file(onnx_path)[:16]}.trt{trt.__version__}.{gpu}"
        cache = cache_dir / f"{onnx_path.stem}.{tag}.engine"
        runtime = trt.Runtime(self.logger)
        if cache.is_file():
            engine = runtime.deserialize_cuda_engine(cache.read_bytes())
        else:
            builder = trt.Builder(self.logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, self.logger)
            if not parser.parse(onnx_path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise BundleError(f"TensorRT could not parse {onnx_path}: {errors}")
            config = builder.create_builder_config()
            if builder.platform_has_fast_fp16:
                config.set_flag(trt.BuilderFlag.FP16)
            profile = builder.create_optimization_profile()
            inp = network.get_input(0)
            chw = tuple(inp.shape)[1:]
            profile.set_shape(inp.name, (1, *chw), (8, *chw), (self.MAX_BATCH, *chw))
            config.add_optimization_profile(profile)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise BundleError(f"TensorRT failed to build an engine from {onnx_path}")
            cache.write_bytes(bytes(serialized))
            engine = runtime.deserialize_cuda_engine(bytes(serialized))
        return engine, engine.create_execution_context()

    def _run(self, pair, x: np.ndarray) -> np.ndarray:
        engine, context = pair
        torch = self.torch
        outs = []
        for sl in _chunks(len(x), self.MAX_BATCH):
            xin = torch.from_numpy(np.ascontiguousarray(x[sl])).to(self.device)
            in_name = engine.get_tensor_name(0)
            out_name = engine.get_tensor_name(1)
            context.set_input_shape(in_name, tuple(xin.shape))
            out = torch.empty(tuple(context.get_tensor_shape(out_name)), dtype=torch.float32, device=self.device)
            context.set_tensor_address(in_name, xin.data_ptr())
            context.set_tensor_address(out_name, out.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not context.execute_async_v3(stream.cuda_stream):
                raise BundleError("TensorRT execution failed")
            stream.synchronize()
            outs.append(out.cpu().numpy())
        return np.concatenate(outs, axis=0)


# --------------------------------------------------------------------------------- the bundle
@dataclass
class LearnedBundle:
    """A loaded bundle: the :class:`anonymizer.base.CropAnonymizer` the pipeline calls.

    Attributes:
        kind: always ``"learned"``.
        fingerprint: sha256 of bundle.yaml + G + C weights: identifies the exact protection.
        reid_fingerprint: sha256 of C's weights and preprocessing: features with equal
            reid_fingerprint are comparable (same embedding space).
        embed_dim: length of :meth:`embed` vectors.
    """

    path: Path
    meta: dict[str, Any]
    runner: _Runner
    fingerprint: str
    reid_fingerprint: str
    embed_dim: int
    batch_size: int = DEFAULT_BATCH
    kind: str = field(default="learned", init=False)
    fallback_count: int = field(default=0, init=False)

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = self.meta["input"]["size_hw"]
        return int(h), int(w)

    @property
    def backend(self) -> str:
        return self.runner.name

    def _normalize_for_c(self, unit: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.meta["input"]["pixel_mean"], np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.meta["input"]["pixel_std"], np.float32).reshape(1, 3, 1, 1)
        return ((unit - mean) / std).astype(np.float32)

    def protect_unit(self, unit: np.ndarray) -> np.ndarray:
        """G on an N×3×H×W RGB [0, 1] batch at the bundle size; returns the same layout."""
        outs = [
            self.runner.run_g(np.ascontiguousarray(unit[sl] * 2.0 - 1.0, dtype=np.float32))
            for sl in _chunks(len(unit), self.batch_size)
        ]
        return (np.concatenate(outs, 0) + 1.0) / 2.0 if outs else unit.copy()

    def protect(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One protected BGR uint8 crop per input crop, same shape as the input.

        Fails closed: a crop that would come back pixel-identical to its input (possible for
        tiny or flat crops) is replaced by the bundle's hand-made desensitization, and if that is
        still identical, by a flat grey patch; ``fallback_count`` counts those events.
        """
        return self.protect_with_native(crops)[0]

    def protect_with_native(self, crops: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Like :meth:`protect`, also returning G's output at the bundle size (BGR uint8).

        The native images are what a lossless sidecar should keep (``anonymizer.sidecar``): they
        are exactly what G_R was trained to invert, before any resize into the frame. An entry is
        None for an empty crop.
        """
        crops = list(crops)
        out: list[np.ndarray] = [c.copy() for c in crops]
        native: list[np.ndarray | None] = [None] * len(crops)
        valid = [i for i, c in enumerate(crops) if c.size > 0]
        if valid:
            sub = [crops[i] for i in valid]
            unit = self.protect_unit(crops_to_unit_batch(sub, self.input_hw))
            h, w = self.input_hw
            nat = unit_batch_to_crops(unit, [np.empty((h, w, 3), np.uint8)] * len(sub))
            prot = unit_batch_to_crops(unit, sub)
            for i, p, n in zip(valid, prot, nat, strict=True):
                out[i], native[i] = p, n
        for i, (c, p) in enumerate(zip(crops, out, strict=True)):
            if c.size > 0 and np.array_equal(c, p):
                out[i] = self._fail_closed(c)
                native[i] = None
        return out, native

    def _fail_closed(self, crop: np.ndarray) -> np.ndarray:
        from anonymizer.baselines import BaselineAnonymizer

        self.fallback_count += 1
        des = self.meta.get("desensitization", {})
        kind = des.get("type", "mosaic")
        p = BaselineAnonymizer(kind, des.get("radius")).protect_one(_as_bgr3(crop))
        if crop.ndim == 2:
            p = cv2.cvtColor(p, cv2.COLOR_BGR2GRAY)
        if np.array_equal(p, crop):
            p = np.full_like(crop, 128 if int(crop.reshape(-1)[0]) != 128 else 0)
        return p

    def embed_unit(self, unit: np.ndarray) -> np.ndarray:
        """C on an N×3×H×W RGB [0, 1] batch; returns L2-normalized float32 features [N, D]."""
        if len(unit) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        x = self._normalize_for_c(unit)
        feats = np.concatenate(
            [self.runner.run_c(np.ascontiguousarray(x[sl])) for sl in _chunks(len(x), self.batch_size)], 0
        ).astype(np.float32)
        feats = feats.reshape(len(feats), -1)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalized Re-ID features [N, D] float32 of raw or protected BGR uint8 crops."""
        crops = list(crops)
        for c in crops:
            if c.size == 0:
                raise ValueError("embed() got an empty crop")
        return self.embed_unit(crops_to_unit_batch(crops, self.input_hw))

    def describe(self) -> str:
        return (
            f"learned anonymizer {self.path.name} ({self.backend}): G {self.meta['generator']['spec']}, "
            f"C {self.meta['reid'].get('name')} dim {self.embed_dim}, input {self.input_hw}, "
            f"fingerprint {self.fingerprint[:12]}"
        )


# ----------------------------------------------------------------------------------- loading
def read_bundle_yaml(
    path: str | Path, verify: bool = False, trusted_keys: Sequence[str | Path] | str | Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """(bundle folder, parsed bundle.yaml).

    ``verify``: also check every listed file against its sha256 and apply the signature policy of
    :func:`anonymizer.bundle_signing.enforce_signature_policy` with ``trusted_keys`` (what every
    consumer of a bundle's weights must do; only tools that merely describe a bundle skip it).
    """
    root, meta = _parse_bundle_yaml(path)
    if verify:
        from anonymizer.bundle_signing import enforce_signature_policy

        verify_all_files(root, meta)
        enforce_signature_policy(root, meta, trusted_keys)
    return root, meta


def _parse_bundle_yaml(path: str | Path) -> tuple[Path, dict[str, Any]]:
    root = Path(path)
    if root.is_file() and root.name == BUNDLE_YAML:
        root = root.parent
    yml = root / BUNDLE_YAML
    if not yml.is_file():
        raise BundleError(f"no {BUNDLE_YAML} in {root}: not a learned anonymizer bundle")
    try:
        meta = yaml.safe_load(yml.read_text())
    except yaml.YAMLError as exc:
        raise BundleError(f"{yml} is not valid YAML: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{yml} is not a {BUNDLE_FORMAT} file")
    if int(meta.get("version", 0)) > BUNDLE_VERSION:
        raise BundleError(f"{yml} has version {meta.get('version')}; this code reads up to {BUNDLE_VERSION}")
    return root, meta


def verify_file(root: Path, meta: dict[str, Any], name: str) -> Path:
    """Path of bundle file ``name`` after checking it against the sha256 recorded in bundle.yaml."""
    path = root / name
    expected = meta.get("files", {}).get(name)
    if expected is None:
        raise BundleError(f"{name} is not listed in {root / BUNDLE_YAML}")
    if not path.is_file():
        raise BundleError(f"bundle file {path} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(
            f"{path} does not match the sha256 recorded in bundle.yaml "
            f"({actual[:12]}… vs {expected[:12]}…): the file was modified or replaced"
        )
    return path


def verify_all_files(root: Path, meta: dict[str, Any]) -> None:
    """Check every file bundle.yaml lists (G and C must be among them) against its sha256."""
    files = meta.get("files")
    if not isinstance(files, dict) or G_FILE not in files or C_FILE not in files:
        raise BundleError(f"{root / BUNDLE_YAML} must list at least {G_FILE} and {C_FILE} with their sha256")
    for name in files:
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise BundleError(
                f"{root / BUNDLE_YAML} lists '{name}': bundle files must be plain names inside the folder"
            )
        verify_file(root, meta, name)


def manifest_sha256(meta: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the parsed bundle.yaml, without any signature field.

    Everything that decides what G and C do is in bundle.yaml (specs, normalization, sizes,
    desensitization, privacy bound, and the sha256 of every weight, ONNX and sealed file), so this
    one hash is what a signature covers. Canonical (sorted keys, no whitespace) so that YAML
    formatting and comments do not matter, and so that every reader computes the same bytes.
    """
    body = {k: v for k, v in meta.items() if k not in SIGNATURE_FIELDS}
    try:
        text = json.dumps(
            _plain(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
        )
    except (TypeError, ValueError) as exc:
        raise BundleError(f"bundle.yaml cannot be put in canonical form: {exc}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bundle_fingerprint(root: Path, meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update((root / BUNDLE_YAML).read_bytes())
    for name in (G_FILE, C_FILE):
        h.update(bytes.fromhex(meta["files"][name]))
    return h.hexdigest()


def reid_fingerprint(meta: dict[str, Any]) -> str:
    spec = {"C": meta["files"][C_FILE], "reid": meta["reid"], "input": meta["input"]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def load_generator_weights(spec: dict, state: dict):
    """Rebuild a generator from its spec and load ``state`` strictly (eval mode)."""
    from anonymizer.networks import build_generator

    net = build_generator(spec)
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_bundle(
    path: str | Path,
    backend: str = "torch",
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH,
    cache_dir: str | Path | None = None,
    trusted_keys: Sequence[str | Path] | str | Path | None = None,
) -> LearnedBundle:
    """Load a learned anonymizer bundle for the pipeline.

    Fails closed, in this order: every listed file must match its sha256; a present signature must
    be valid for the manifest; with ``trusted_keys`` the bundle must be signed by one of them
    (without: a bundle not signed by a default trusted key loads with a warning); and G, run with
    the chosen backend on the built-in canaries, must change them at least as much as the bundle's
    recorded privacy bound and the privacy floor's absolute limits require.

    Args:
        path: bundle folder (or its bundle.yaml).
        backend: 'torch' (safetensors weights) or 'onnxruntime' | 'openvino' | 'tensorrt' (the
            bundle's ONNX files; 'tensorrt' is untested here and raises BundleError when the
            tensorrt package is missing).
        device: 'cpu' or 'cuda:N'.
        cache_dir: where TensorRT engines are cached (default: the bundle folder).
        trusted_keys: public key files (or folders of them) whose signature is required; None or
            empty: the project's default trusted keys, and unsigned bundles are accepted with a warning.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}' (expected one of {', '.join(BACKENDS)})")
    root, meta = read_bundle_yaml(path, verify=True, trusted_keys=trusted_keys)
    bundle = _open_verified(root, meta, backend, device, batch_size, cache_dir)
    from anonymizer import canary

    ssim_max, changed_min = canary.measure(bundle.protect_unit, bundle.input_hw)
    reason = canary.check(meta.get("privacy_bound"), ssim_max, changed_min, f"{root} ({backend})")
    if reason:
        raise BundleError(f"refusing bundle {reason}")
    log.info(
        "loaded %s (canaries: SSIM %.3f, weakest half changed %.0f%%)", bundle.describe(), ssim_max, 100 * changed_min
    )
    return bundle


def _open_verified(
    root: Path,
    meta: dict[str, Any],
    backend: str,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH,
    cache_dir: str | Path | None = None,
) -> LearnedBundle:
    """Build the runner of a bundle whose files were already verified (no canary check)."""
    if backend == "torch":
        from safetensors.torch import load as load_safetensors

        # the bytes that were hashed are the bytes that are loaded
        g = load_generator_weights(meta["generator"]["spec"], load_safetensors(_verified_bytes(root, meta, G_FILE)))
        if meta["reid"]["config"].get("name") == "onnx":
            # C grew from a public ONNX graph: its architecture is that graph, so the bundle's own
            # C.onnx (weights included, hashed like every file) is rebuilt as PyTorch modules
            from reid.models.onnx_backbone import onnx_to_torch

            c = onnx_to_torch(root / C_ONNX, data=_verified_bytes(root, meta, C_ONNX))
        else:
            c = build_reid_from_meta(meta["reid"], load_safetensors(_verified_bytes(root, meta, C_FILE)))
        runner: _Runner = _TorchRunner(g, c, device)
    else:
        g_onnx, c_onnx = verify_file(root, meta, G_ONNX), verify_file(root, meta, C_ONNX)
        if backend == "onnxruntime":
            runner = _OnnxRuntimeRunner(g_onnx, c_onnx, device)
        elif backend == "openvino":
            runner = _OpenVinoRunner(g_onnx, c_onnx, device)
        else:
            runner = _TensorRTRunner(g_onnx, c_onnx, device, Path(cache_dir) if cache_dir else root)
    return LearnedBundle(
        path=root,
        meta=meta,
        runner=runner,
        fingerprint=bundle_fingerprint(root, meta),
        reid_fingerprint=reid_fingerprint(meta),
        embed_dim=int(meta["reid"]["embed_dim"]),
        batch_size=batch_size,
    )


def _verified_bytes(root: Path, meta: dict[str, Any], name: str) -> bytes:
    data = (root / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["files"][name]:
        raise BundleError(f"{root / name} changed while it was being loaded")
    return data


# ------------------------------------------------------------------------------ Re-ID adapter
def build_reid_from_meta(reid_meta: dict[str, Any], state: dict | None = None):
    """Rebuild C from the ``reid`` section of bundle.yaml with the project's Re-ID factory.

    ``reid.config`` holds the keyword arguments of :func:`reid.models.build_reid_model` (name,
    last_stride, gem, neck, neck_feat, non_local, input_blur_sigma; bundles without the last build C
    without an input filter, as they were trained). The bundle stores C without its training-only
    identity classifier, so C is rebuilt with ``num_classes=0`` and loaded strictly.
    """
    from reid.models import build_reid_model

    cfg = dict(reid_meta["config"])
    net = build_reid_model(num_classes=0, pretrain_choice="none", **cfg)
    if state is not None:
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BundleError(f"C weights do not fit the Re-ID model {cfg}: {exc}") from None
    return net.eval()


# -------------------------------------------------------------------------------- writing
def write_bundle(
    out_dir: str | Path,
    *,
    g,
    c,
    g_r,
    generator_spec: dict,
    reid_meta: dict,
    recovery_spec: dict | None = None,
    input_meta: dict,
    key: bytes,
    desensitization: dict,
    dataset: dict | None = None,
    metrics: dict | None = None,
    training: dict | None = None,
    onnx: bool = True,
    c_drop_prefixes: Sequence[str] = ("classifier",),
    extra: dict | None = None,
) -> Path:
    """Write a bundle folder (see the module docstring); returns its path.

    ``g``, ``c`` and ``g_r`` are torch modules; C's keys starting with ``c_drop_prefixes`` (the
    training-only identity classifier) are left out. G_R is sealed with ``key`` (AES-256-GCM),
    bound to this bundle's G weights.
    """
    import torch
    from safetensors.torch import save, save_file

    from anonymizer.crypto import key_id, seal

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def cpu_state(net, drop: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        return {
            k: v.detach().cpu().contiguous().clone()
            for k, v in net.state_dict().items()
            if not (drop and k.startswith(tuple(drop)))
        }

    save_file(cpu_state(g), str(out / G_FILE))
    save_file(cpu_state(c, c_drop_prefixes), str(out / C_FILE))
    g_sha = sha256_file(out / G_FILE)
    gr_blob = seal(save(cpu_state(g_r)), key, context=f"G_R for G {g_sha}")
    (out / GR_FILE).write_bytes(gr_blob)

    files = {G_FILE: g_sha, C_FILE: sha256_file(out / C_FILE), GR_FILE: sha256_file(out / GR_FILE)}
    if onnx:
        h, w = input_meta["size_hw"]
        export_onnx(g, (1, 3, h, w), out / G_ONNX)
        export_onnx(c, (1, 3, h, w), out / C_ONNX)
        files[G_ONNX] = sha256_file(out / G_ONNX)
        files[C_ONNX] = sha256_file(out / C_ONNX)

    meta: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "input": dict(input_meta),
        "generator": {"spec": dict(generator_spec), "io": "RGB on [-1, 1] at input.size_hw, tanh output"},
        "reid": {**reid_meta, "dropped_prefixes": list(c_drop_prefixes)},
        "recovery": {
            "file": GR_FILE,
            "cipher": "AES-256-GCM",
            "key_id": key_id(key),
            "bound_to": "sha256 of G.safetensors",
            "generator": dict(recovery_spec if recovery_spec is not None else generator_spec),
        },
        "desensitization": dict(desensitization),
        "dataset": dict(dataset or {}),
        "metrics": metrics or {},
        "training": training or {},
        **(extra or {}),
        "privacy_bound": measure_privacy_bound_torch(g, input_meta["size_hw"]),
        "files": files,
    }
    (out / BUNDLE_YAML).write_text(yaml.safe_dump(_plain(meta), sort_keys=False, allow_unicode=True))
    return out


def measure_privacy_bound_torch(g, size_hw: Sequence[int]) -> dict[str, Any]:
    """bundle.yaml's ``privacy_bound``: G's scores on the built-in canaries (torch, CPU, a copy of G)."""
    import copy

    from anonymizer import canary

    runner = _TorchRunner(copy.deepcopy(g).cpu().eval(), None, "cpu")
    hw = (int(size_hw[0]), int(size_hw[1]))

    def protect_unit(u: np.ndarray) -> np.ndarray:
        return (runner.run_g(np.ascontiguousarray(u * 2.0 - 1.0, np.float32)) + 1.0) / 2.0

    ssim_max, changed_min = canary.measure(protect_unit, hw)
    reason = canary.check(None, ssim_max, changed_min, "this G")
    if reason:
        log.warning("the bundle will not load: %s", reason)
    return canary.bound_record(ssim_max, changed_min, "torch")


def export_onnx(net, shape: tuple[int, ...], path: Path) -> None:
    """ONNX export with a dynamic batch axis (legacy exporter: needs no onnxscript)."""
    import copy
    import warnings

    import torch

    model = copy.deepcopy(net).cpu().eval()
    from torch.onnx import symbolic_helper

    if not hasattr(symbolic_helper, "_export_onnx_opset_version"):
        # onnx2torch's modules (a C grown from a public ONNX graph) read the opset from this
        # attribute, which newer PyTorch keeps elsewhere; the legacy exporter itself does not use it
        symbolic_helper._export_onnx_opset_version = 17
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(*shape),),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["output"],
            dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            do_constant_folding=True,
        )


def _plain(obj: Any) -> Any:
    """YAML-safe copy: tuples → lists, numpy scalars → Python numbers, yacs nodes → dicts."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    return obj


def default_demo_bundle() -> Path:
    """Where the committed demo bundle lives (a checkout's models/demo, or the installed package data)."""
    from privreid.resources import demo_bundle_dir

    return demo_bundle_dir()
