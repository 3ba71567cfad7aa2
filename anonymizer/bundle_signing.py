"""Ed25519 signatures of anonymizer bundles: keys, signing, the privacy bound, and their CLI.

Why: the sha256 of a bundle's weights sit in its own bundle.yaml, which anyone can edit, and
bundle.yaml also holds the generator spec that decides how much G blurs. A signature over the
manifest (:func:`anonymizer.bundle_files.manifest_sha256`: all of bundle.yaml, file hashes included) ties
the whole protection to whoever holds the private key.

``bundle.sig`` (JSON, next to bundle.yaml)::

    {"format": "privreid-bundle-signature", "version": 1, "algorithm": "Ed25519",
     "key_id": first 16 hex of sha256(raw public key), "public_key": base64 raw public key,
     "manifest_sha256": ..., "signature": base64 Ed25519 signature of "privreid-bundle-manifest:v1:<manifest_sha256>"}

The public key travels in the file so that a broken or stale signature is detected even when the
key is not trusted; trust is a separate question, answered by the trusted keys (PEM public key
files, or folders of ``*.pub`` / ``*.pem``; defaults: ``configs/trusted_keys/``).

Policy (:func:`enforce_signature_policy`): a signature that is malformed, invalid or for another
manifest is always refused. With explicit trusted keys, an unsigned bundle or one signed by
another key is refused. Without: one signed by a default trusted key loads quietly, anything else
loads with a warning. The reading side (checking ``bundle.sig``, the policy, trusted keys) lives in
:mod:`anonymizer.bundle_files`, below the loader that applies it, and is re-exported here; this
module is the writing side, which loads bundles (to measure their bound, to verify them) and so
sits above :mod:`anonymizer.bundle`.

CLI::

    python -m anonymizer.bundle_signing keygen --out KEYBASE          # KEYBASE.key (0600) + KEYBASE.pub
    python -m anonymizer.bundle_signing sign BUNDLE --key KEYBASE.key  # measures the privacy bound, writes bundle.sig
    python -m anonymizer.bundle_signing verify BUNDLE [--trusted-keys PUB ...]
    python -m anonymizer.bundle_signing bound BUNDLE                   # (re)measure privacy_bound of an unsigned bundle

Exit status: 0 ok, 1 verification failed, 2 bad usage (missing files, unreadable keys).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anonymizer import canary
from anonymizer.bundle import _open_verified, load_bundle
from anonymizer.bundle_files import (  # the checks every load runs live below bundle.py; re-exported here
    BUNDLE_YAML,
    DEFAULT_TRUSTED_DIR,
    SIG_FILE,
    SIG_FORMAT,
    BundleError,
    KeyFileError,
    KeyPaths,
    _message,
    _plain,
    _raw,
    enforce_signature_policy,
    key_id,
    load_public_key,
    manifest_sha256,
    read_bundle_yaml,
    read_signature,
    split_key_paths,
    trusted_public_keys,
    verify_all_files,
)

__all__ = [
    "DEFAULT_TRUSTED_DIR",
    "SIG_FILE",
    "SIG_FORMAT",
    "KeyFileError",
    "KeyPaths",
    "enforce_signature_policy",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "main",
    "measure_bound",
    "read_signature",
    "sign_bundle",
    "split_key_paths",
    "trusted_public_keys",
    "write_bound",
]

log = logging.getLogger("anonymizer.bundle_signing")


# ----------------------------------------------------------------------------------------- keys
def keygen(base: str | Path) -> tuple[Path, Path, str]:
    """Write BASE.key (private, PKCS#8 PEM, mode 0600, never overwritten) and BASE.pub; returns both and the key id."""
    base = Path(base).expanduser()
    priv_path, pub_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for p in (priv_path, pub_path):
        if p.exists():
            raise KeyFileError(f"{p} exists: refusing to overwrite a key")
    base.parent.mkdir(parents=True, exist_ok=True)
    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = priv.public_key()
    pub_path.write_bytes(pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path, key_id(pub)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).expanduser().read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 private key")
    return key


def measure_bound(bundle: str | Path) -> dict:
    """Measure G's canary scores (torch) on a bundle whose files match bundle.yaml; refuses a G that does not
    protect."""
    root, meta = read_bundle_yaml(bundle)
    verify_all_files(root, meta)
    b = _open_verified(root, meta, "torch")
    ssim_max, changed_min = canary.measure(b.protect_unit, b.input_hw)
    reason = canary.check(None, ssim_max, changed_min, str(root))
    if reason:
        raise BundleError(f"refusing to record a privacy bound: {reason}")
    return canary.bound_record(ssim_max, changed_min, "torch")


def write_bound(bundle: str | Path) -> dict:
    """Measure and store ``privacy_bound`` in bundle.yaml (key order and the rest of the file kept)."""
    root, meta = read_bundle_yaml(bundle)
    bound = measure_bound(root)
    if meta.get("privacy_bound") != bound:
        items = [(k, v) for k, v in meta.items() if k != "privacy_bound"]
        at = next((i for i, (k, _) in enumerate(items) if k == "files"), len(items))
        items.insert(at, ("privacy_bound", bound))
        (root / BUNDLE_YAML).write_text(yaml.safe_dump(_plain(dict(items)), sort_keys=False, allow_unicode=True))
    return bound


def sign_bundle(bundle: str | Path, private_key: str | Path) -> Path:
    """Measure the privacy bound, then sign the manifest; writes bundle.sig and returns its path."""
    key = load_private_key(private_key)
    root, _ = read_bundle_yaml(bundle)
    write_bound(root)
    root, meta = read_bundle_yaml(root)
    manifest = manifest_sha256(meta)
    pub = key.public_key()
    sig = {
        "format": SIG_FORMAT,
        "version": 1,
        "algorithm": "Ed25519",
        "key_id": key_id(pub),
        "public_key": base64.b64encode(_raw(pub)).decode(),
        "manifest_sha256": manifest,
        "signature": base64.b64encode(key.sign(_message(manifest))).decode(),
    }
    (root / SIG_FILE).write_text(json.dumps(sig, indent=2) + "\n")
    return root / SIG_FILE


# ------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m anonymizer.bundle_signing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen", help="new Ed25519 key pair: KEYBASE.key (0600) and KEYBASE.pub")
    kg.add_argument("--out", required=True)
    sg = sub.add_parser("sign", help="measure the privacy bound and sign a bundle")
    sg.add_argument("bundle")
    sg.add_argument("--key", required=True, help="private key file (keygen's KEYBASE.key)")
    vf = sub.add_parser("verify", help="files, signature, trust and canaries of a bundle")
    vf.add_argument("bundle")
    vf.add_argument(
        "--trusted-keys", nargs="+", default=None, help=f"public key files or folders (default: {DEFAULT_TRUSTED_DIR})"
    )
    vf.add_argument("--backend", default="torch")
    bd = sub.add_parser("bound", help="measure and store the privacy bound of an existing bundle")
    bd.add_argument("bundle")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "keygen":
            priv, pub, kid = keygen(args.out)
            print(f"key id {kid}: private key {priv} (keep it secret, outside any repository), public key {pub}")
            return 0
        if not (Path(args.bundle) / BUNDLE_YAML).is_file():
            print(f"error: no {BUNDLE_YAML} in {args.bundle}", file=sys.stderr)
            return 2
        if args.cmd == "sign":
            path = sign_bundle(args.bundle, args.key)
            print(f"signed {args.bundle}: {path} (key {json.loads(path.read_text())['key_id']})")
        elif args.cmd == "bound":
            if (Path(args.bundle) / SIG_FILE).exists():
                print(
                    f"error: {args.bundle} is signed; a new bound would void the signature: use 'sign' instead",
                    file=sys.stderr,
                )
                return 2
            print(f"privacy_bound of {args.bundle}: {write_bound(args.bundle)}")
        else:
            trusted = split_key_paths(args.trusted_keys) or [DEFAULT_TRUSTED_DIR]
            trusted_public_keys(trusted)  # unreadable keys are bad usage, not a failed verification
            b = load_bundle(args.bundle, backend=args.backend, trusted_keys=trusted)
            print(
                f"OK {args.bundle}: signed by a trusted key, files and canaries pass (fingerprint {b.fingerprint[:12]})"
            )
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BundleError as exc:
        print(f"verification failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
