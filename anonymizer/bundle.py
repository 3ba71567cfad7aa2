"""Model bundles of the learned anonymizer: format, writer and :func:`load_bundle`.

A bundle is a folder the pipeline, the exporters and the recovery tool all read::

    bundle.yaml        what it is: input size, normalization, desensitization, dataset, metrics,
                       generator / Re-ID specs and the sha256 of every other file
    G.safetensors      anonymization encoder G (public: it only ever makes images less identifiable)
    C.safetensors      Re-ID model C (one model for raw and protected crops); a C grown from a
                       public ONNX graph has none: its C.onnx is its one weight file on every backend
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

The runtimes that run G and C are :mod:`backends` (``BACKENDS`` below is their registry's names); the
file checks (hashes, manifest, signature policy) and the crop batching are :mod:`anonymizer.bundle_files`,
whose names are re-exported here.

Image conventions: crops come in as BGR uint8 of any size. G and G_R work on RGB images at the
bundle's input size scaled to [-1, 1]; C sees RGB images normalized with the bundle's mean/std.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from anonymizer import canary
from anonymizer.bundle_files import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    BUNDLE_YAML,
    C_FILE,
    C_ONNX,
    G_FILE,
    G_ONNX,
    GR_FILE,
    BundleError,
    _chunks,
    _plain,
    bundle_fingerprint,
    crops_to_unit_batch,
    fit_crop,
    read_bundle_yaml,
    reid_fingerprint,
    sha256_file,
    unit_batch_to_crops,
    verified_bytes,
)
from anonymizer.bundle_files import SIGNATURE_FIELDS as SIGNATURE_FIELDS  # re-exported (old import path)
from anonymizer.bundle_files import manifest_sha256 as manifest_sha256
from anonymizer.bundle_files import verify_all_files as verify_all_files
from anonymizer.bundle_files import verify_file as verify_file
from anonymizer.scramble import (
    Scrambler,
    ScrambleSpec,
    scramble_block,
    scramble_public_key,
    scramble_spec,
    scrambler_for,
)
from backends import AUTO, Backend, BackendError, as_bgr3, load_backend, parse_device, pick_backend
from backends import BACKENDS as RUNTIMES
from backends.export import export_onnx as export_onnx
from privreid.registry import RegistryError

log = logging.getLogger(__name__)

# The runtimes a bundle loads with (backends.BACKENDS, torch first: it is the default and the only one
# that reads the safetensors weights; every other runtime reads the bundle's ONNX files).
BACKENDS: tuple[str, ...] = ("torch", *(name for name in RUNTIMES.names() if name != "torch"))
# what ANONYMIZER.BACKEND / --backend accept: a runtime, or auto (the fastest that runs on the device)
BACKEND_CHOICES: tuple[str, ...] = (AUTO, *BACKENDS)
DEFAULT_BATCH = 32
# per-runtime options for (G, C): OpenVINO runs G in f32 (backends.openvino_backend says why) and C at
# its default precision; TensorRT caches its engines as G.<tag>.engine / C.<tag>.engine
_RUNTIME_OPTIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "openvino": ({"precision": "f32"}, {"precision": None}),
    "tensorrt": ({"cache_name": "G"}, {"cache_name": "C"}),
}


@dataclass
class BundleRunner:
    """G (on [-1, 1] images) and C (on normalized images) of one bundle, each a :class:`backends.Backend`."""

    name: str
    g_backend: Backend
    c_backend: Backend

    @property
    def g(self) -> Any:
        """G as its runtime holds it (for torch: the ``nn.Module``)."""
        return self.g_backend.network

    @property
    def c(self) -> Any:
        return self.c_backend.network

    def run_g(self, x: np.ndarray) -> np.ndarray:
        return self.g_backend(x)

    def run_c(self, x: np.ndarray) -> np.ndarray:
        return self.c_backend(x)


# --------------------------------------------------------------------------------- the bundle
@dataclass
class ProtectedBatch:
    """One call of G on a list of crops, index-aligned with it.

    ``released``: what is pasted into the frame (each crop's own shape); ``native``: the released
    image at the bundle's size (the sidecar's source for recovery; None for an empty crop or a
    fail-closed fallback); ``sealed``: each crop's scramble seed sealed to the key holder (None: not
    scrambled); ``for_reid``: what the bundle's C reads, the crop before any scramble (the released
    crop itself when there is none). Only ``for_reid`` can differ from what leaves the pipeline, and
    it goes nowhere but C.
    """

    released: list[np.ndarray]
    native: list[np.ndarray | None]
    sealed: list[bytes | None]
    for_reid: list[np.ndarray]


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
    runner: BundleRunner
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

    @cached_property
    def scrambler(self) -> Scrambler | None:
        """The keyed scramble this bundle's output gets after G (:mod:`anonymizer.scramble`), or None."""
        return scrambler_for(self.meta)

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
        return self.protect_batch(crops).released

    def protect_batch(self, crops: Sequence[np.ndarray]) -> ProtectedBatch:
        """G on the crops, and what of it may leave the pipeline (:class:`ProtectedBatch`).

        The native images are what a lossless sidecar should keep (``anonymizer.sidecar``): they
        are exactly what G_R was trained to invert, before any resize into the frame.

        A bundle that declares a scramble (``recovery.scramble``, :mod:`anonymizer.scramble`) has
        G's output at the bundle size scrambled with a fresh seed per crop, the seed sealed to the
        key holder; the crop pasted into the frame is resized from that scrambled image. C reads
        the crop before the scramble (``for_reid``), in memory only.
        """
        crops = list(crops)
        out: list[np.ndarray] = [c.copy() for c in crops]
        native: list[np.ndarray | None] = [None] * len(crops)
        sealed: list[bytes | None] = [None] * len(crops)
        for_reid: list[np.ndarray] = list(out)
        valid = [i for i, c in enumerate(crops) if c.size > 0]
        scrambler = self.scrambler
        if valid:
            sub = [crops[i] for i in valid]
            unit = self.protect_unit(crops_to_unit_batch(sub, self.input_hw))
            h, w = self.input_hw
            nat = unit_batch_to_crops(unit, [np.empty((h, w, 3), np.uint8)] * len(sub))
            plain = unit_batch_to_crops(unit, sub)
            for i, p, n, c in zip(valid, plain, nat, sub, strict=True):
                out[i], native[i], for_reid[i] = p, n, p
                if scrambler is not None:
                    released, sealed[i] = scrambler.release(n)
                    native[i], out[i] = released, fit_crop(released, c)
        for i, (c, p) in enumerate(zip(crops, out, strict=True)):
            if c.size > 0 and (np.array_equal(c, p) or np.array_equal(c, for_reid[i])):
                out[i] = for_reid[i] = self._fail_closed(c)
                native[i], sealed[i] = None, None
        return ProtectedBatch(out, native, sealed, for_reid)

    def _fail_closed(self, crop: np.ndarray) -> np.ndarray:
        from anonymizer.baselines import BaselineAnonymizer

        self.fallback_count += 1
        des = self.meta.get("desensitization", {})
        kind = des.get("type", "mosaic")
        p = BaselineAnonymizer(kind, des.get("radius")).protect_one(as_bgr3(crop))
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
def load_generator_weights(spec: dict, state: dict):
    """Rebuild a generator from its spec and load ``state`` strictly (eval mode)."""
    from anonymizer.networks import build_generator

    net = build_generator(spec)
    net.load_state_dict(state, strict=True)
    return net.eval()


def runtime_name(backend: str, device: str = "cpu") -> str:
    """The registered name of a runtime backend (aliases and case allowed; ``auto``: the fastest one that
    runs on ``device``, :func:`backends.pick_backend`); ValueError naming the key otherwise."""
    if str(backend).strip().lower() == AUTO:
        try:
            return pick_backend(device)
        except BackendError as exc:
            raise ValueError(str(exc)) from None
    try:
        return RUNTIMES.get(backend).name
    except RegistryError as exc:
        raise ValueError(str(exc)) from None


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
        backend: one of :data:`BACKENDS`: 'torch' (safetensors weights) or a runtime of the bundle's
            ONNX files, 'onnxruntime' | 'openvino' | 'tensorrt' ('tensorrt' is untested here and
            raises BundleError when the tensorrt package is missing).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N' (:func:`backends.parse_device`); a device the
            backend cannot use raises BundleError.
        cache_dir: where TensorRT engines are cached (default: the bundle folder).
        trusted_keys: public key files (or folders of them) whose signature is required; None or
            empty: the project's default trusted keys, and unsigned bundles are accepted with a warning.
    """
    parse_device(device)  # a misspelt device fails before any file is read
    backend = runtime_name(backend, device)
    root, meta = read_bundle_yaml(path, verify=True, trusted_keys=trusted_keys)
    _check_scramble(root, meta)
    bundle = _open_verified(root, meta, backend, device, batch_size, cache_dir)
    ssim_max, changed_min = canary.measure(bundle.protect_unit, bundle.input_hw)
    reason = canary.check(meta.get("privacy_bound"), ssim_max, changed_min, f"{root} ({backend})")
    if reason:
        raise BundleError(f"refusing bundle {reason}")
    if backend != "torch":
        _check_declared_generator(root, meta, bundle.input_hw)
    log.info(
        "loaded %s (canaries: SSIM %.3f, weakest half changed %.0f%%)", bundle.describe(), ssim_max, 100 * changed_min
    )
    return bundle


def _check_scramble(root: Path, meta: dict[str, Any]) -> None:
    """A malformed ``recovery.scramble`` is refused here, not at the first crop (where every region
    would go solid); a G whose code could be scrambled but is not says so once."""
    try:
        declared = scramble_spec(meta)
    except ValueError as exc:
        raise BundleError(f"{root}: {exc}") from None
    if declared is None and scramble_block(meta.get("generator", {}).get("spec", {})):
        log.warning(
            "bundle %s writes a recovery code on a mosaic but declares no scramble key (recovery.scramble): "
            "its crops are released unscrambled, and whoever has G can read the code (docs/security.md). "
            "Export it again with this version to scramble them.",
            root,
        )


def _check_declared_generator(root: Path, meta: dict[str, Any], input_hw: tuple[int, int]) -> None:
    """The canaries again, on G as bundle.yaml declares it (its spec and safetensors weights, in torch).

    An ONNX runtime runs G.onnx, which an edit of the declared spec does not change; but that spec is
    what recovery, re-export and the privacy records rely on. A bundle whose two forms of G disagree
    about privacy is refused whatever runtime was asked for, so an edited spec fails the same way in
    every backend.
    """
    from safetensors.torch import load as load_safetensors

    g = load_generator_weights(meta["generator"]["spec"], load_safetensors(verified_bytes(root, meta, G_FILE)))
    ssim_max, changed_min = _torch_canary_scores(g, input_hw)
    reason = canary.check(meta.get("privacy_bound"), ssim_max, changed_min, f"{root} (declared G, torch)")
    if reason:
        raise BundleError(f"refusing bundle {reason}")


def _open_verified(
    root: Path,
    meta: dict[str, Any],
    backend: str,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH,
    cache_dir: str | Path | None = None,
) -> LearnedBundle:
    """Build G and C of a bundle whose files were already verified (no canary check).

    Every runtime gets the bytes that were hashed (:func:`anonymizer.bundle_files.verified_bytes`),
    never a path it would read again: safetensors for torch, the ONNX files for the others.
    """
    backend = runtime_name(backend, device)
    g_opts, c_opts = _RUNTIME_OPTIONS.get(backend, ({}, {}))
    if backend == "tensorrt":
        g_opts = {**g_opts, "cache_dir": Path(cache_dir) if cache_dir else root}
        c_opts = {**c_opts, "cache_dir": Path(cache_dir) if cache_dir else root}
    g: Any
    c: Any
    if backend == "torch":
        from safetensors.torch import load as load_safetensors

        g = load_generator_weights(meta["generator"]["spec"], load_safetensors(verified_bytes(root, meta, G_FILE)))
        if meta["reid"]["config"].get("name") == "onnx":
            # C grew from a public ONNX graph: its architecture is that graph, so the bundle's own
            # C.onnx (weights included, hashed like every file) is rebuilt as PyTorch modules
            from reid.models.onnx_backbone import onnx_to_torch

            c = onnx_to_torch(root / C_ONNX, data=verified_bytes(root, meta, C_ONNX))
        else:
            c = build_reid_from_meta(meta["reid"], load_safetensors(verified_bytes(root, meta, C_FILE)))
    else:
        g, c = verified_bytes(root, meta, G_ONNX), verified_bytes(root, meta, C_ONNX)
    try:
        runner = BundleRunner(
            backend, load_backend(backend, g, device, **g_opts), load_backend(backend, c, device, **c_opts)
        )
    except BackendError as exc:
        raise BundleError(f"cannot run bundle {root} with backend {backend!r} on {device}: {exc}") from exc
    return LearnedBundle(
        path=root,
        meta=meta,
        runner=runner,
        fingerprint=bundle_fingerprint(root, meta),
        reid_fingerprint=reid_fingerprint(meta),
        embed_dim=int(meta["reid"]["embed_dim"]),
        batch_size=batch_size,
    )


# ------------------------------------------------------------------------------ Re-ID adapter
def build_reid_from_meta(reid_meta: dict[str, Any], state: dict | None = None):
    """Rebuild C from the ``reid`` section of bundle.yaml with the project's Re-ID factory.

    ``reid.config`` holds the keyword arguments of :func:`reid.models.build_reid_model` (name,
    last_stride, gem, neck, neck_feat, non_local, input_blur_sigma; bundles without the last build C
    without an input filter, as they were trained). The bundle stores C without its training-only
    identity classifier, so C is rebuilt with ``num_classes=0`` and loaded strictly.
    """
    from anonymizer.payload_front import attach_front
    from reid.models import build_reid_model

    cfg = dict(reid_meta["config"])
    net = build_reid_model(num_classes=0, pretrain_choice="none", **cfg)
    try:  # a C that reads G's code has its reader in front (anonymizer.payload_front)
        attach_front(net, reid_meta.get("payload_front"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"reid.payload_front of bundle.yaml is malformed: {exc}") from None
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

    c_from_onnx = (reid_meta.get("config") or {}).get("name") == "onnx"
    if c_from_onnx and not onnx:
        raise ValueError(
            "a C grown from an ONNX graph (reid name 'onnx') is shipped as C.onnx: onnx=False cannot write it"
        )
    save_file(cpu_state(g), str(out / G_FILE))
    g_sha = sha256_file(out / G_FILE)
    gr_blob = seal(save(cpu_state(g_r)), key, context=f"G_R for G {g_sha}")
    (out / GR_FILE).write_bytes(gr_blob)

    files = {G_FILE: g_sha, GR_FILE: sha256_file(out / GR_FILE)}
    if not c_from_onnx:  # otherwise C.onnx is C's only weight file (bundle_files.c_weights_file)
        save_file(cpu_state(c, c_drop_prefixes), str(out / C_FILE))
        files[C_FILE] = sha256_file(out / C_FILE)
    else:
        (out / C_FILE).unlink(missing_ok=True)  # an earlier export's copy, no longer listed or loaded
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
    block = scramble_block(generator_spec)
    if block:  # a payload on a mosaic: published crops are scrambled, their seeds sealed to this key
        meta["recovery"]["scramble"] = ScrambleSpec(block, scramble_public_key(key)).as_meta()
    (out / BUNDLE_YAML).write_text(yaml.safe_dump(_plain(meta), sort_keys=False, allow_unicode=True))
    return out


def measure_privacy_bound_torch(g, size_hw: Sequence[int]) -> dict[str, Any]:
    """bundle.yaml's ``privacy_bound``: G's scores on the built-in canaries (torch, CPU, a copy of G)."""
    import copy

    ssim_max, changed_min = _torch_canary_scores(copy.deepcopy(g).cpu().eval(), (int(size_hw[0]), int(size_hw[1])))
    reason = canary.check(None, ssim_max, changed_min, "this G")
    if reason:
        log.warning("the bundle will not load: %s", reason)
    return canary.bound_record(ssim_max, changed_min, "torch")


def _torch_canary_scores(g, hw: tuple[int, int]) -> tuple[float, float]:
    """(SSIM max, weakest-half changed min) of a torch G ([-1, 1] in and out) on the built-in canaries, on the CPU."""
    run_g = load_backend("torch", g, "cpu")

    def protect_unit(u: np.ndarray) -> np.ndarray:
        return (run_g(np.ascontiguousarray(u * 2.0 - 1.0, np.float32)) + 1.0) / 2.0

    return canary.measure(protect_unit, hw)


def default_demo_bundle() -> Path:
    """Where the committed demo bundle lives (a checkout's models/demo, or the installed package data)."""
    from privreid.resources import demo_bundle_dir

    return demo_bundle_dir()
