"""Per-camera authentication of feature messages: HMAC-SHA256 in Kafka record headers.

Anyone who may write ``reid.features`` can otherwise impersonate any camera: the contract's
validation only proves a message is well-formed, not who sent it. With a shared secret per camera
(or one per site) the publisher adds two headers to every record and the matching service refuses
records whose MAC does not verify, so a writer without the key cannot inject, alter or re-target
observations. Kafka ACLs (docs/kafka-contract.md, "Production") restrict who may write at all;
the MAC additionally binds each record to a camera's key.

Headers:

* ``privreid-key-id``: the id of the key used (ASCII, ``[A-Za-z0-9._:-]{1,64}``), so keys can be
  rotated: the service accepts every key listed for the camera.
* ``privreid-hmac``: lowercase hex HMAC-SHA256 over a domain tag, the key id, the record key (the
  camera id) and the exact value bytes, each length-prefixed so that no two different inputs
  share a MAC input. The value is MAC-ed as bytes, before any parsing on the consumer side.

Key files (YAML or JSON, parsed with ``yaml.safe_load``)::

    key_id: site-a-2025            # one key for every camera
    key: 5f0c...                   # hex, at least 32 bytes (64 hex digits)

    cameras:                       # or per camera; "*" = any camera not listed
      lobby: {key_id: lobby-2025, key: 9a1e...}
      door:  [{key_id: door-2025, key: ...}, {key_id: door-2024, key: ...}]   # rotation
      "*":   {key_id: site-a-2025, key: 5f0c...}

The publisher signs with the first key of its camera (or of ``"*"``); the service accepts any key
listed for the camera, and the ``"*"`` keys only for cameras without their own entry, so a leaked
site key cannot forge a camera that has a key of its own. Key files must not be readable by group
or others (they are refused otherwise): a readable key is a forgeable camera.
``python -m transport.message_auth generate --key-id ID --out FILE`` (or ``privreid hmac-key generate ...``;
``python -m stream.message_auth`` still works) writes a fresh key file (mode 0600).

This module is shared by ``stream/publisher.py`` and ``reid/service.py`` and imports neither (see :mod:`transport`).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER_MAC = "privreid-hmac"
HEADER_KEY_ID = "privreid-key-id"
MAC_DOMAIN = b"privreid-hmac-v1"
MIN_KEY_BYTES = 32
ANY_CAMERA = "*"
KEY_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_MAC_RE = re.compile(rb"[0-9a-f]{64}")

Headers = Sequence[tuple[str, bytes]]


class AuthConfigError(ValueError):
    """A key file is missing, unreadable, too permissive or malformed; the message names it."""


@dataclass(frozen=True)
class MessageKey:
    """One HMAC key. ``secret`` is excluded from ``repr`` so it never reaches a log line."""

    key_id: str
    secret: bytes = field(repr=False)


def compute_mac(secret: bytes, key_id: str, record_key: bytes, value: bytes) -> str:
    """Hex HMAC-SHA256 of the length-prefixed (domain, key id, record key, value)."""
    h = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (MAC_DOMAIN, key_id.encode("ascii"), record_key, value):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


# --------------------------------------------------------------------------- key files


def _parse_key(entry: Any, where: str) -> MessageKey:
    if not isinstance(entry, dict) or set(entry) - {"key_id", "key"} or not {"key_id", "key"} <= set(entry):
        raise AuthConfigError(f"{where}: expected {{key_id: ID, key: HEX}}")
    key_id, key = entry["key_id"], entry["key"]
    if not isinstance(key_id, str) or not KEY_ID_RE.fullmatch(key_id):
        raise AuthConfigError(f"{where}: key_id must be 1-64 characters of [A-Za-z0-9._:-]")
    if not isinstance(key, str) or not _HEX_RE.fullmatch(key) or len(key) % 2:
        raise AuthConfigError(f"{where} ({key_id}): key must be a hex string")
    secret = bytes.fromhex(key)
    if len(secret) < MIN_KEY_BYTES:
        raise AuthConfigError(f"{where} ({key_id}): key has {len(secret)} bytes, at least {MIN_KEY_BYTES} required")
    return MessageKey(key_id, secret)


def _check_permissions(path: Path) -> None:
    """Refuse key files that group or others may read or write (POSIX only)."""
    if os.name != "posix":
        return
    mode = path.stat().st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise AuthConfigError(
            f"key file {path} is accessible by group/others (mode {stat.S_IMODE(mode):04o}): "
            f"chmod 600 {path} (Kubernetes secrets: defaultMode 0400)"
        )


def load_key_file(path: str | os.PathLike[str]) -> dict[str, list[MessageKey]]:
    """``camera id or "*"`` -> its keys (first = the one to sign with). Raises :class:`AuthConfigError`."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise AuthConfigError(f"key file {p} not found")
    _check_permissions(p)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AuthConfigError(f"key file {p} cannot be read: {exc}") from None
    if isinstance(doc, dict) and "cameras" in doc:
        if set(doc) != {"cameras"} or not isinstance(doc["cameras"], dict) or not doc["cameras"]:
            raise AuthConfigError(f"key file {p}: 'cameras' must be the only top-level key, a non-empty mapping")
        out: dict[str, list[MessageKey]] = {}
        for cam, entries in doc["cameras"].items():
            if not isinstance(cam, str) or not (cam == ANY_CAMERA or re.fullmatch(r"[A-Za-z0-9._:/-]{1,128}", cam)):
                raise AuthConfigError(f"key file {p}: {cam!r} is not a camera id (or '*')")
            items = entries if isinstance(entries, list) else [entries]
            if not items:
                raise AuthConfigError(f"key file {p}: camera {cam!r} has no key")
            out[cam] = [_parse_key(e, f"key file {p}, camera {cam!r}") for e in items]
        return out
    return {ANY_CAMERA: [_parse_key(doc, f"key file {p}")]}


def write_key_file(path: str | os.PathLike[str], key_id: str) -> Path:
    """A new random key (single-key form), created with mode 0600; refuses to overwrite."""
    if not KEY_ID_RE.fullmatch(key_id):
        raise AuthConfigError("key_id must be 1-64 characters of [A-Za-z0-9._:-]")
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"key_id: {key_id}\nkey: {secrets.token_hex(MIN_KEY_BYTES)}\n")
    return p


# --------------------------------------------------------------------------- both ends


class Signer:
    """Producer side: the two headers for one record."""

    def __init__(self, keys: dict[str, list[MessageKey]]) -> None:
        self._keys = keys

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Signer:
        return cls(load_key_file(path))

    def key_for(self, camera_id: str) -> MessageKey:
        keys = self._keys.get(camera_id) or self._keys.get(ANY_CAMERA)
        if not keys:
            raise AuthConfigError(f"no HMAC key for camera {camera_id!r} in the key file (and no '*' entry)")
        return keys[0]

    def headers(self, record_key: bytes, value: bytes) -> list[tuple[str, bytes]]:
        key = self.key_for(record_key.decode("utf-8"))
        mac = compute_mac(key.secret, key.key_id, record_key, value)
        return [(HEADER_KEY_ID, key.key_id.encode("ascii")), (HEADER_MAC, mac.encode("ascii"))]


class Verifier:
    """Consumer side: ``check()`` returns ``None`` (accept) or ``(reason, detail)`` for the DLQ.

    Reasons: ``unauthenticated`` (no MAC headers while ``require``), ``bad_mac`` (headers present
    but malformed, repeated, an unknown key id for this camera, or a MAC that does not verify).
    A MAC that is present is always checked, also when ``require`` is off.
    """

    def __init__(self, keys: dict[str, list[MessageKey]], require: bool = True) -> None:
        self._keys = {cam: {k.key_id: k for k in ks} for cam, ks in keys.items()}
        self.require = bool(require)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], require: bool = True) -> Verifier:
        return cls(load_key_file(path), require)

    def check(
        self, record_key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, Any]] | None
    ) -> tuple[str, str] | None:
        macs = [v for k, v in headers or () if k == HEADER_MAC]
        kids = [v for k, v in headers or () if k == HEADER_KEY_ID]
        if not macs and not kids:
            return ("unauthenticated", f"no {HEADER_MAC} header") if self.require else None
        if len(macs) != 1 or len(kids) != 1:
            return "bad_mac", f"expected one {HEADER_MAC} and one {HEADER_KEY_ID} header"
        mac, kid = macs[0], kids[0]
        if not isinstance(mac, (bytes, bytearray)) or not _MAC_RE.fullmatch(bytes(mac)):
            return "bad_mac", f"{HEADER_MAC} is not 64 lowercase hex digits"
        try:
            key_id = bytes(kid).decode("ascii")
        except (TypeError, UnicodeDecodeError):
            return "bad_mac", f"{HEADER_KEY_ID} is not ASCII"
        if record_key is None:
            return "bad_mac", "a signed record needs its key (the camera id)"
        try:
            camera = bytes(record_key).decode("utf-8")
        except UnicodeDecodeError:
            return "bad_mac", "the record key is not UTF-8"
        table = self._keys.get(camera, self._keys.get(ANY_CAMERA, {}))
        key = table.get(key_id) if KEY_ID_RE.fullmatch(key_id) else None
        if key is None:
            return "bad_mac", f"key id {key_id[:64]!r} is not a key of camera {camera[:64]!r}"
        expected = compute_mac(key.secret, key.key_id, bytes(record_key), bytes(value or b""))
        if not hmac.compare_digest(expected.encode("ascii"), bytes(mac)):
            return "bad_mac", f"HMAC does not verify with key {key_id!r}"
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transport.message_auth",
        description="Create an HMAC key file for feature message authentication.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write a new random key (mode 0600)")
    gen.add_argument("--key-id", required=True)
    gen.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        path = write_key_file(args.out, args.key_id)
    except (AuthConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}: set KAFKA.HMAC_KEY_FILE (pipeline) and AUTH.KEYS_FILE (matching service) to it")
    return 0


__all__ = [
    "HEADER_MAC",
    "HEADER_KEY_ID",
    "MAC_DOMAIN",
    "MIN_KEY_BYTES",
    "ANY_CAMERA",
    "KEY_ID_RE",
    "AuthConfigError",
    "MessageKey",
    "compute_mac",
    "load_key_file",
    "write_key_file",
    "Signer",
    "Verifier",
    "main",
]


if __name__ == "__main__":
    sys.exit(main())
