"""Sealing the recovery decoder G_R with AES-256-GCM.

Whoever holds G_R can undo the anonymization, so a bundle ships G_R only encrypted, and the key
travels separately (a file with mode 0600, or an environment variable). GCM authenticates as well
as encrypts: a wrong key or a tampered file fails *before* any weight is used, with
:class:`RecoveryKeyError`. Decrypted weights live only in memory.

File layout of a sealed blob::

    b"PRIVREID-SEALED\\x01"  (16 bytes magic + version)
    nonce                  (12 bytes, random per encryption)
    ciphertext ‖ tag       (AES-GCM; associated data = magic ‖ the ``context`` string)

``context`` binds the blob to its bundle (e.g. the sha256 of G's weights), so a G_R blob cannot be
swapped into another bundle unnoticed. Keys are 32 random bytes written as 64 hex characters.

Key generation: ``python -m anonymizer.crypto keygen --out recovery.key``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PRIVREID-SEALED\x01"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ENV = "PRIVREID_RECOVERY_KEY"


class RecoveryKeyError(RuntimeError):
    """The key is missing or malformed, or does not open the sealed recovery decoder."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> str:
    """Short public identifier of a key (not the key): lets tools name the key a bundle expects."""
    return hashlib.sha256(b"privreid-recovery-key-id:" + key).hexdigest()[:16]


def write_key(path: str | Path, key: bytes | None = None) -> bytes:
    """Write ``key`` (a new one when None) as hex to ``path``, readable by the owner only."""
    key = generate_key() if key is None else key
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


def parse_key(text: str, source: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise RecoveryKeyError(
            f"recovery key from {source} is not hex text (expected {KEY_BYTES * 2} hex characters)"
        ) from None
    if len(key) != KEY_BYTES:
        raise RecoveryKeyError(f"recovery key from {source} has {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key


def load_key(key_file: str | Path | None = None, env_var: str = KEY_ENV) -> bytes:
    """The key from ``key_file`` if given, else from the environment variable ``env_var``."""
    if key_file is not None:
        path = Path(key_file)
        if not path.is_file():
            raise RecoveryKeyError(f"recovery key file {path} does not exist")
        return parse_key(path.read_text(), f"file {path}")
    value = os.environ.get(env_var)
    if not value:
        raise RecoveryKeyError(f"no recovery key: pass a key file or set {env_var}")
    return parse_key(value, f"environment variable {env_var}")


def seal(plaintext: bytes, key: bytes, context: str = "") -> bytes:
    """Encrypt and authenticate ``plaintext``; ``context`` must be given again to open it."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    ct = AESGCM(key).encrypt(nonce, plaintext, MAGIC + context.encode())
    return MAGIC + nonce + ct


def open_sealed(blob: bytes, key: bytes, context: str = "") -> bytes:
    """Decrypt a :func:`seal` blob; :class:`RecoveryKeyError` on a wrong key or a modified blob."""
    if not blob.startswith(MAGIC):
        raise RecoveryKeyError("not a sealed privreid file (bad header); was it written by training.export?")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    ct = blob[len(MAGIC) + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, ct, MAGIC + context.encode())
    except InvalidTag:
        raise RecoveryKeyError(
            f"the recovery key (id {key_id(key)}) does not open this recovery decoder: wrong key, "
            "or the sealed file / bundle was modified (AES-GCM authentication failed)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m anonymizer.crypto", description="Recovery-key utilities for learned anonymizer bundles."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    kg = sub.add_parser("keygen", help="write a new random AES-256 key (hex, mode 0600)")
    kg.add_argument("--out", required=True, help="key file to create (refuses to overwrite)")
    ki = sub.add_parser("key-id", help="print the public id of a key (compare with bundle.yaml)")
    ki.add_argument("--key-file", default=None, help=f"key file (default: ${KEY_ENV})")
    args = ap.parse_args(argv)
    if args.cmd == "keygen":
        out = Path(args.out)
        if out.exists():
            print(f"refusing to overwrite existing key file {out}", file=sys.stderr)
            return 2
        key = write_key(out)
        print(f"wrote recovery key {out} (key id {key_id(key)}); keep it apart from the bundle")
        return 0
    try:
        print(key_id(load_key(args.key_file)))
    except RecoveryKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
