"""A bundle's files as a reader must trust them: format names, bundle.yaml, hashes, the signature check, crop batching.

The bottom of the bundle modules: :mod:`anonymizer.bundle` (loading and writing),
:mod:`anonymizer.bundle_signing` (keys, signing, its CLI) and :mod:`anonymizer.canary` all import
it, and it imports none of them, so every check a load runs sits below the code that loads.
No model code here: hashes, YAML, JSON and Ed25519 only (and :mod:`backends.preprocess` for the
crop batching).

Signature policy (:func:`enforce_signature_policy`): a signature (``bundle.sig``, format in
:mod:`anonymizer.bundle_signing`) that is malformed, invalid or for another manifest is always
refused. With explicit trusted keys, an unsigned bundle or one signed by another key is refused.
Without: one signed by a default trusted key (``configs/trusted_keys/``) loads quietly, anything
else loads with a warning.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from backends.preprocess import to_nchw
from privreid.hashing import sha256_file  # re-exported: the bundle modules import it from here

log = logging.getLogger("anonymizer.bundle_signing")  # the policy's messages keep the name they always had

BUNDLE_FORMAT = "privreid-anonymizer-bundle"
BUNDLE_VERSION = 1
BUNDLE_YAML = "bundle.yaml"
SIGNATURE_FIELDS = ("signature",)  # never part of the manifest (a signature cannot cover itself)
G_FILE, C_FILE, GR_FILE = "G.safetensors", "C.safetensors", "G_R.sealed"
G_ONNX, C_ONNX = "G.onnx", "C.onnx"
SIG_FILE = "bundle.sig"
SIG_FORMAT = "privreid-bundle-signature"
DEFAULT_TRUSTED_DIR = Path(__file__).resolve().parents[1] / "configs" / "trusted_keys"
KeyPaths = Sequence[str | Path] | str | Path | None


class BundleError(RuntimeError):
    """A bundle is missing, malformed, or one of its files does not match its recorded sha256."""


class KeyFileError(ValueError):
    """A key file is missing or not an Ed25519 key (bad usage, not a failed verification)."""


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


# --------------------------------------------------------------------------- crops in and out
def crops_to_unit_batch(crops: Sequence[np.ndarray], size_hw: tuple[int, int]) -> np.ndarray:
    """BGR uint8 crops of any size → N×3×H×W float32 RGB on [0, 1] at ``size_hw``."""
    return to_nchw(crops, size_hw, order="bgr", interpolation="auto")


def unit_batch_to_crops(batch: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """N×3×H×W RGB on [0, 1] → BGR uint8 crops resized to the shapes of ``like``."""
    out = []
    for img, ref in zip(batch, like, strict=True):
        bgr = np.ascontiguousarray(
            (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1]
        )
        out.append(fit_crop(bgr, ref))
    return out


def fit_crop(bgr: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """A BGR uint8 image resized to ``ref``'s height and width (area when shrinking both, else
    linear) and made grey when ``ref`` is grey."""
    rh, rw = ref.shape[:2]
    if bgr.shape[:2] != (rh, rw):
        interp = cv2.INTER_AREA if (rh < bgr.shape[0] and rw < bgr.shape[1]) else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (rw, rh), interpolation=interp)
    if ref.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return bgr


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# ------------------------------------------------------------------------- bundle.yaml, hashes
def read_bundle_yaml(
    path: str | Path, verify: bool = False, trusted_keys: KeyPaths = None
) -> tuple[Path, dict[str, Any]]:
    """(bundle folder, parsed bundle.yaml).

    ``verify``: also check every listed file against its sha256 and apply the signature policy of
    :func:`enforce_signature_policy` with ``trusted_keys`` (what every consumer of a bundle's
    weights must do; only tools that merely describe a bundle skip it).
    """
    root, meta = _parse_bundle_yaml(path)
    if verify:
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
    if not isinstance(files, dict) or G_FILE not in files or c_weights_file(meta) not in files:
        raise BundleError(
            f"{root / BUNDLE_YAML} must list at least {G_FILE} and {c_weights_file(meta)} with their sha256"
        )
    for name in files:
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            raise BundleError(
                f"{root / BUNDLE_YAML} lists '{name}': bundle files must be plain names inside the folder"
            )
        verify_file(root, meta, name)


def verified_bytes(root: Path, meta: dict[str, Any], name: str) -> bytes:
    """The bytes of bundle file ``name``, checked against bundle.yaml: the bytes hashed are the bytes loaded."""
    expected = meta.get("files", {}).get(name)
    if expected is None:
        raise BundleError(f"{name} is not listed in {root / BUNDLE_YAML}")
    try:
        data = (root / name).read_bytes()
    except OSError as exc:
        raise BundleError(f"bundle file {root / name} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise BundleError(f"{root / name} changed while it was being loaded")
    return data


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
    """sha256 of bundle.yaml and of G's and C's weights: identifies the exact protection."""
    h = hashlib.sha256()
    h.update((root / BUNDLE_YAML).read_bytes())
    for name in (G_FILE, c_weights_file(meta)):
        h.update(bytes.fromhex(meta["files"][name]))
    return h.hexdigest()


def c_grown_from_onnx(meta: dict[str, Any]) -> bool:
    """Whether C is a public ONNX graph made trainable (``reid.config.name`` is ``onnx``)."""
    reid = meta.get("reid")
    config = reid.get("config") if isinstance(reid, dict) else None
    return isinstance(config, dict) and config.get("name") == "onnx"


def c_weights_file(meta: dict[str, Any]) -> str:
    """The one file that holds C's weights.

    A C grown from an ONNX graph is rebuilt from its own C.onnx on every backend (its architecture
    is that graph), so such bundles ship no C.safetensors: a state dict beside the graph would be a
    second copy of the same weights that nothing loads, a quarter of the bundle. Older bundles of
    that kind still list C.safetensors; it stays C's file there, so their fingerprints do not change.
    """
    files = meta.get("files")
    if c_grown_from_onnx(meta) and isinstance(files, dict) and C_FILE not in files:
        return C_ONNX
    return C_FILE


def reid_fingerprint(meta: dict[str, Any]) -> str:
    """sha256 of C's weights and preprocessing: features with equal fingerprints share one embedding space."""
    spec = {"C": meta["files"][c_weights_file(meta)], "reid": meta["reid"], "input": meta["input"]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------ keys and signatures
def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(pub)).hexdigest()[:16]


def _message(manifest: str) -> bytes:
    return f"privreid-bundle-manifest:v1:{manifest}".encode()


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read the public key {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return key


def split_key_paths(keys: KeyPaths) -> list[Path]:
    """Key paths from a list or a comma-separated string (ANONYMIZER.TRUSTED_KEYS); [] = defaults."""
    if keys is None:
        return []
    if isinstance(keys, str):
        items = keys.split(",")
    elif isinstance(keys, os.PathLike):  # one path (KeyPaths allows it); iterating a Path would raise
        items = [os.fspath(keys)]
    else:
        items = [str(k) for k in keys]
    return [Path(k.strip()).expanduser() for k in items if k.strip()]


def trusted_public_keys(paths: Sequence[Path]) -> dict[str, bytes]:
    """key id → raw public key of every key file named or found (``*.pub``, ``*.pem``) in a named folder."""
    out: dict[str, bytes] = {}
    for p in paths:
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (".pub", ".pem") and f.is_file())
        elif p.is_file():
            files = [p]
        else:
            raise KeyFileError(f"trusted key {p} does not exist")
        for f in files:
            pub = load_public_key(f)
            out[key_id(pub)] = _raw(pub)
    return out


def read_signature(root: Path, manifest: str) -> dict | None:
    """bundle.sig after checking it is well-formed, for this manifest, and valid for its public key; None: unsigned."""
    path = root / SIG_FILE
    if not path.exists():
        return None
    try:
        sig = json.loads(path.read_text())
        pub_raw = base64.b64decode(sig["public_key"], validate=True)
        signature = base64.b64decode(sig["signature"], validate=True)
        pub = Ed25519PublicKey.from_public_bytes(pub_raw)
        ok_format = (
            sig.get("format") == SIG_FORMAT and sig.get("algorithm") == "Ed25519" and int(sig.get("version", 0)) == 1
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(
            f"{path} is not a valid bundle signature ({exc.__class__.__name__}: {exc}): refusing the bundle"
        ) from None
    if not ok_format:
        raise BundleError(f"{path} is not a {SIG_FORMAT} v1 Ed25519 signature: refusing the bundle")
    if sig.get("key_id") != key_id(pub):
        raise BundleError(f"{path} names key id {sig.get('key_id')} but carries key {key_id(pub)}: refusing the bundle")
    if sig.get("manifest_sha256") != manifest:
        raise BundleError(
            f"{path} signs manifest {str(sig.get('manifest_sha256'))[:12]}… but bundle.yaml hashes to "
            f"{manifest[:12]}…: the bundle changed after it was signed"
        )
    try:
        pub.verify(signature, _message(manifest))
    except InvalidSignature:
        raise BundleError(
            f"{path}: the Ed25519 signature does not verify (key {key_id(pub)}): refusing the bundle"
        ) from None
    return {**sig, "_public_raw": pub_raw}


def enforce_signature_policy(root: Path, meta: dict, trusted_keys: KeyPaths = None) -> str:
    """Apply the loading policy (module docstring); returns 'trusted', 'untrusted' or 'unsigned', or raises
    BundleError."""
    explicit = split_key_paths(trusted_keys)
    try:
        keys = trusted_public_keys(explicit or ([DEFAULT_TRUSTED_DIR] if DEFAULT_TRUSTED_DIR.is_dir() else []))
    except KeyFileError as exc:
        raise BundleError(str(exc)) from None
    sig = read_signature(root, manifest_sha256(meta))
    if sig is not None and keys.get(sig["key_id"]) == sig["_public_raw"]:
        log.info("bundle %s is signed by trusted key %s", root, sig["key_id"])
        return "trusted"
    what = "unsigned" if sig is None else f"signed by key {sig['key_id']}, which is not trusted"
    if explicit:
        raise BundleError(
            f"bundle {root} is {what}; only bundles signed by the trusted keys "
            f"({', '.join(sorted(keys)) or 'none found'}) are accepted"
        )
    log.warning(
        "bundle %s is %s: nothing vouches for its generator spec and weights (an edited bundle.yaml could "
        "weaken the protection; only the canary check stands in the way). Sign it "
        "(python -m anonymizer.bundle_signing sign) or set ANONYMIZER.TRUSTED_KEYS to require signatures.",
        root,
        what,
    )
    return "unsigned" if sig is None else "untrusted"
