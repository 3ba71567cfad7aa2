"""Ed25519 signatures of anonymizer bundles, the loading policy, and their CLI.

Why: the sha256 of a bundle's weights sit in its own bundle.yaml, which anyone can edit, and
bundle.yaml also holds the generator spec that decides how much G blurs. A signature over the
manifest (:func:`anonymizer.bundle.manifest_sha256`: all of bundle.yaml, file hashes included) ties
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
loads with a warning.

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
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from anonymizer.bundle import BUNDLE_YAML, BundleError, _open_verified, _plain, manifest_sha256, read_bundle_yaml

log = logging.getLogger("anonymizer.bundle_signing")
SIG_FILE = "bundle.sig"
SIG_FORMAT = "privreid-bundle-signature"
DEFAULT_TRUSTED_DIR = Path(__file__).resolve().parents[1] / "configs" / "trusted_keys"
KeyPaths = Sequence[str | Path] | str | Path | None


class KeyFileError(ValueError):
    """A key file is missing or not an Ed25519 key (bad usage, not a failed verification)."""


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(pub)).hexdigest()[:16]


def _message(manifest: str) -> bytes:
    return f"privreid-bundle-manifest:v1:{manifest}".encode()


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


# ----------------------------------------------------------------------------------- signatures
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


def measure_bound(bundle: str | Path) -> dict:
    """Measure G's canary scores (torch) on a bundle whose files match bundle.yaml; refuses a G that does not
    protect."""
    from anonymizer import canary
    from anonymizer.bundle import verify_all_files

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
            from anonymizer.bundle import load_bundle

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
