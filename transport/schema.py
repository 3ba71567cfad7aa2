"""The feature contract: one Kafka message per person observation on ``reid.features``.

This module is the single source of truth for the message format that other teams build on
(``docs/kafka-contract.md`` explains it for humans, :data:`JSON_SCHEMA` for machines). Both ends
validate with the same code: the producer refuses to publish a message that breaks the contract
(:func:`build_message`), and the consumer turns every byte string it receives into either a
:class:`FeatureMessage` or a :class:`SchemaError` whose ``reason`` is short, stable and safe to log
(:func:`decode_message`). Decoding never trusts the input: sizes are checked before parsing,
``NaN``/``Infinity`` literals and duplicate keys are refused, and the embedding must decode to
exactly ``embedding_dim`` finite values of unit L2 norm.

``python -m transport.schema --json-schema`` prints the JSON Schema (``python -m stream.schema`` still works).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
DEFAULT_TOPIC = "reid.features"
DLQ_SUFFIX = ".dlq"

MAX_MESSAGE_BYTES = 64 * 1024  # a 4096-d float32 embedding is ~22 KB of base64; anything larger is hostile
MAX_DIM = 4096
MAX_ID_LEN = 128
MAX_COORD = 1e6  # pixel coordinates beyond this are garbage, not a very large frame
MAX_TIMESTAMP_MS = 2**53 - 1  # exact in IEEE doubles, so JavaScript consumers read it unchanged
NORM_TOLERANCE = 1e-2  # float16 rounding of a unit vector moves its norm by ~1e-3
EMBEDDING_DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
# The protections the pipeline publishes (anonymizer/factory.py: the baselines and learned
# bundles). Anything else is refused: an unknown label may mean raw pixels ("unprotected", "none").
ANONYMIZATION_KINDS = ("blur", "learned", "mosaic", "noise")
# Kept for the clearer error message: labels that say outright that the crop was not protected.
FORBIDDEN_ANONYMIZATION = ("none", "raw", "identity", "off", "unprotected")

# Compiled without anchors and always applied with ``fullmatch``: ``match`` with ``$`` would let a
# trailing newline through ("evil\n"), since ``$`` also matches just before a final newline.
_ID_RE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SESSION_RE = re.compile(r"[0-9a-f]{32}")

FIELDS = (
    "schema_version",
    "camera_id",
    "session_id",
    "frame_index",
    "timestamp_ms",
    "track_id",
    "box",
    "score",
    "embedding",
    "embedding_dtype",
    "embedding_dim",
    "reid_fingerprint",
    "anonymizer_fingerprint",
    "anonymization",
)


class SchemaError(ValueError):
    """A message breaks the contract. ``reason`` is a short stable code, ``detail`` says where.

    The reason codes (``bad_json``, ``too_large``, ``missing_field``, ``bad_type``, ``bad_value``,
    ``unknown_field``, ``bad_version``, ``bad_embedding``) are what the dead-letter queue records,
    so operators can count failures by kind.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FeatureMessage:
    """One validated person observation. ``embedding`` is float32, L2-normalised, shape ``[dim]``."""

    camera_id: str
    session_id: str
    frame_index: int
    timestamp_ms: int
    track_id: int
    box: tuple[float, float, float, float]
    score: float
    embedding: np.ndarray
    embedding_dtype: str
    reid_fingerprint: str
    anonymizer_fingerprint: str
    anonymization: str
    schema_version: int = SCHEMA_VERSION

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def track_key(self) -> tuple[str, str, int]:
        """Track ids are unique within one camera and one publishing session (pipeline run)."""
        return (self.camera_id, self.session_id, self.track_id)


# --------------------------------------------------------------------------- embeddings


def encode_embedding(vector: np.ndarray, dtype: str = "float16") -> str:
    """L2-normalise ``vector`` and return it as base64 of little-endian ``dtype`` values."""
    if dtype not in EMBEDDING_DTYPES:
        raise SchemaError("bad_value", f"embedding_dtype must be one of {sorted(EMBEDDING_DTYPES)}, got {dtype!r}")
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not 1 <= vec.size <= MAX_DIM:
        raise SchemaError("bad_embedding", f"embedding dimension {vec.size} outside 1..{MAX_DIM}")
    norm = float(np.linalg.norm(vec))
    if not math.isfinite(norm) or norm == 0.0:
        raise SchemaError("bad_embedding", "embedding has a zero or non-finite norm")
    vec = vec / norm
    return base64.b64encode(vec.astype(EMBEDDING_DTYPES[dtype]).tobytes()).decode("ascii")


def decode_embedding(data: str, dtype: str, dim: int) -> np.ndarray:
    """Decode base64 to float32 ``[dim]``; refuse a wrong length, non-finite values or a non-unit norm."""
    itemsize = EMBEDDING_DTYPES[dtype].itemsize
    if len(data) != 4 * math.ceil(dim * itemsize / 3):
        raise SchemaError("bad_embedding", f"embedding length does not match embedding_dim={dim} ({dtype})")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SchemaError("bad_embedding", f"embedding is not valid base64 ({exc})") from None
    if len(raw) != dim * itemsize:
        raise SchemaError("bad_embedding", f"embedding has {len(raw)} bytes, expected {dim * itemsize}")
    vec = np.frombuffer(raw, dtype=EMBEDDING_DTYPES[dtype]).astype(np.float32)
    if not np.isfinite(vec).all():
        raise SchemaError("bad_embedding", "embedding contains NaN or infinite values")
    norm = float(np.linalg.norm(vec))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        raise SchemaError("bad_embedding", f"embedding is not L2-normalised (norm {norm:.4f})")
    return vec / norm


# --------------------------------------------------------------------------- field checks


def _require_int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise SchemaError("bad_type", f"{key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise SchemaError("bad_value", f"{key}={v} outside {lo}..{hi}")
    return v


def _require_number(d: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError("bad_type", f"{key} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise SchemaError("bad_value", f"{key}={v} outside {lo}..{hi}")
    return v


def _require_str(d: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise SchemaError("bad_type", f"{key} must be a string, got {type(v).__name__}")
    if not pattern.fullmatch(v):
        shown = v if len(v) <= 40 else v[:40] + "..."
        raise SchemaError("bad_value", f"{key}={shown!r} is not {what}")
    return v


def _parse_box(v: Any) -> tuple[float, float, float, float]:
    if not isinstance(v, list) or len(v) != 4:
        raise SchemaError("bad_type", "box must be a list of 4 numbers [x1, y1, x2, y2]")
    out = []
    for i, c in enumerate(v):
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(float(c)):
            raise SchemaError("bad_type", f"box[{i}] must be a finite number")
        if abs(float(c)) > MAX_COORD:
            raise SchemaError("bad_value", f"box[{i}]={c} beyond ±{MAX_COORD:g}")
        out.append(float(c))
    if out[2] < out[0] or out[3] < out[1]:
        raise SchemaError("bad_value", f"box {out} has x2 < x1 or y2 < y1")
    return (out[0], out[1], out[2], out[3])


def _validate_fields(d: Any) -> dict[str, Any]:
    """Every check except decoding the embedding; returns the checked scalar fields."""
    if not isinstance(d, dict):
        raise SchemaError("bad_type", f"message must be a JSON object, got {type(d).__name__}")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise SchemaError("bad_version", f"schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    missing = [k for k in FIELDS if k not in d]
    if missing:
        raise SchemaError("missing_field", f"missing {', '.join(missing)}")
    if len(d) != len(FIELDS):
        unknown = sorted(str(k) for k in d if k not in FIELDS)
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise SchemaError("unknown_field", f"fields not in schema version {SCHEMA_VERSION}: {shown}")
    out = {
        "camera_id": _require_str(d, "camera_id", _ID_RE, "1-128 characters of [A-Za-z0-9._:/-]"),
        "session_id": _require_str(d, "session_id", _SESSION_RE, "32 lowercase hex digits"),
        "frame_index": _require_int(d, "frame_index", 0, MAX_TIMESTAMP_MS),
        "timestamp_ms": _require_int(d, "timestamp_ms", 0, MAX_TIMESTAMP_MS),
        "track_id": _require_int(d, "track_id", 0, 2**63 - 1),
        "box": _parse_box(d["box"]),
        "score": _require_number(d, "score", 0.0, 1.0),
    }
    dtype = d["embedding_dtype"]
    if not isinstance(dtype, str) or dtype not in EMBEDDING_DTYPES:
        raise SchemaError("bad_value", f"embedding_dtype must be one of {sorted(EMBEDDING_DTYPES)}")
    out["embedding_dtype"] = dtype
    out["embedding_dim"] = _require_int(d, "embedding_dim", 1, MAX_DIM)
    if not isinstance(d["embedding"], str):
        raise SchemaError("bad_type", "embedding must be a base64 string")
    out["reid_fingerprint"] = _require_str(d, "reid_fingerprint", _SHA256_RE, "a lowercase sha256 hex digest")
    out["anonymizer_fingerprint"] = _require_str(
        d, "anonymizer_fingerprint", _SHA256_RE, "a lowercase sha256 hex digest"
    )
    kind = d["anonymization"]
    if not isinstance(kind, str):
        raise SchemaError("bad_type", f"anonymization must be a string, got {type(kind).__name__}")
    if kind not in ANONYMIZATION_KINDS:
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        why = (
            "features of unprotected crops are not allowed"
            if kind.strip().lower() in FORBIDDEN_ANONYMIZATION
            else f"not one of {', '.join(ANONYMIZATION_KINDS)}"
        )
        raise SchemaError("bad_value", f"anonymization={shown!r}: {why}")
    out["anonymization"] = kind
    return out


def validate_dict(d: Any) -> FeatureMessage:
    """Check a parsed message against the contract and return it as a :class:`FeatureMessage`."""
    f = _validate_fields(d)
    embedding = decode_embedding(d["embedding"], f["embedding_dtype"], f["embedding_dim"])
    return FeatureMessage(
        camera_id=f["camera_id"],
        session_id=f["session_id"],
        frame_index=f["frame_index"],
        timestamp_ms=f["timestamp_ms"],
        track_id=f["track_id"],
        box=f["box"],
        score=f["score"],
        embedding=embedding,
        embedding_dtype=f["embedding_dtype"],
        reid_fingerprint=f["reid_fingerprint"],
        anonymizer_fingerprint=f["anonymizer_fingerprint"],
        anonymization=f["anonymization"],
    )


# --------------------------------------------------------------------------- both ends


def build_message(
    *,
    camera_id: str,
    session_id: str,
    frame_index: int,
    timestamp_ms: int,
    track_id: int,
    box: tuple[float, float, float, float] | list[float],
    score: float,
    embedding: np.ndarray,
    reid_fingerprint: str,
    anonymizer_fingerprint: str,
    anonymization: str,
    embedding_dtype: str = "float16",
) -> dict[str, Any]:
    """Producer side: the message dict for one observation, validated, embedding normalised.

    Raises :class:`SchemaError` when an argument breaks the contract, so a bug upstream shows up
    where it happens instead of in every consumer.
    """
    msg = {
        "schema_version": SCHEMA_VERSION,
        "camera_id": camera_id,
        "session_id": session_id,
        "frame_index": _as_int(frame_index),
        "timestamp_ms": _as_int(timestamp_ms),
        "track_id": _as_int(track_id),
        "box": [round(float(c), 2) for c in box],
        "score": round(float(score), 4),
        "embedding": encode_embedding(embedding, embedding_dtype),
        "embedding_dtype": embedding_dtype,
        "embedding_dim": int(np.asarray(embedding).size),
        "reid_fingerprint": reid_fingerprint,
        "anonymizer_fingerprint": anonymizer_fingerprint,
        "anonymization": anonymization,
    }
    # Every check except decoding the embedding, which encode_embedding just produced.
    _validate_fields(msg)
    return msg


def _as_int(v: Any) -> Any:
    """numpy integers are fine on the producer side; anything else is left for validation to refuse."""
    return int(v) if isinstance(v, np.integer) else v


def encode_message(msg: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; ``allow_nan=False`` so a non-finite number can never be written."""
    data = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise SchemaError("too_large", f"message is {len(data)} bytes, limit {MAX_MESSAGE_BYTES}")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SchemaError("bad_json", f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise SchemaError("bad_json", f"non-standard JSON constant {name}")


def decode_message(value: bytes | bytearray | memoryview | None) -> FeatureMessage:
    """Consumer side: bytes from Kafka to a validated :class:`FeatureMessage`, or :class:`SchemaError`."""
    if value is None:
        raise SchemaError("bad_json", "empty message (null value)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise SchemaError("too_large", f"message is {len(value)} bytes, limit {MAX_MESSAGE_BYTES}")
    try:
        text = bytes(value).decode("utf-8")
        parsed = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except SchemaError:
        raise
    except UnicodeDecodeError:
        raise SchemaError("bad_json", "message is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise SchemaError("bad_json", f"not valid JSON ({str(exc)[:80]})") from None
    return validate_dict(parsed)


def to_dict(msg: FeatureMessage) -> dict[str, Any]:
    """A :class:`FeatureMessage` back to its wire dict (embedding re-encoded in its original dtype)."""
    fields = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg) if f.name != "schema_version"}
    return build_message(**fields)


# --------------------------------------------------------------------------- JSON Schema


def _json_pattern(rx: re.Pattern[str]) -> str:
    """The ECMA-262 pattern of a fullmatch regex. ``(?!\\n)`` after ``$`` changes nothing in ECMA-262
    (where ``$`` is the end of input) but stops ``re.search``-based validators (Python's
    ``jsonschema``) from accepting a trailing newline."""
    return f"^{rx.pattern}$(?!\\n)"


_SHA256_SCHEMA = {"type": "string", "pattern": _json_pattern(_SHA256_RE)}

JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://privreid.invalid/schemas/reid-features-v1.json",
    "title": "Re-ID feature of one person observation (topic reid.features, key = camera_id)",
    "description": (
        "One message per published person observation. The embedding was computed from the "
        "anonymized (protected) crop, never from raw pixels. Consumers must also check what JSON "
        "Schema cannot express: the decoded embedding has exactly embedding_dim finite values and "
        f"unit L2 norm (tolerance {NORM_TOLERANCE}), x2 >= x1 and y2 >= y1, and the whole message "
        f"is at most {MAX_MESSAGE_BYTES} bytes."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": list(FIELDS),
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION, "description": "Bumped on any change of this schema."},
        "camera_id": {"type": "string", "pattern": _json_pattern(_ID_RE), "description": "Also the message key."},
        "session_id": {
            "type": "string",
            "pattern": _json_pattern(_SESSION_RE),
            "description": "Random id of the publishing pipeline run; track ids are unique "
            "within (camera_id, session_id).",
        },
        "frame_index": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_TIMESTAMP_MS,
            "description": "0-based index of the frame in the camera's stream for this session.",
        },
        "timestamp_ms": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_TIMESTAMP_MS,
            "description": "Capture time, milliseconds since the Unix epoch, UTC.",
        },
        "track_id": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "box": {
            "type": "array",
            "minItems": 4,
            "maxItems": 4,
            "items": {"type": "number", "minimum": -MAX_COORD, "maximum": MAX_COORD},
            "description": "[x1, y1, x2, y2] in pixels of the original frame.",
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "Detection confidence."},
        "embedding": {
            "type": "string",
            "contentEncoding": "base64",
            "maxLength": 4 * math.ceil(MAX_DIM * 4 / 3),
            "description": "L2-normalised vector, little-endian embedding_dtype values, base64.",
        },
        "embedding_dtype": {"enum": sorted(EMBEDDING_DTYPES)},
        "embedding_dim": {"type": "integer", "minimum": 1, "maximum": MAX_DIM},
        "reid_fingerprint": {**_SHA256_SCHEMA, "description": "sha256 of the Re-ID model file."},
        "anonymizer_fingerprint": {**_SHA256_SCHEMA, "description": "sha256 identifying the anonymizer."},
        "anonymization": {
            "enum": list(ANONYMIZATION_KINDS),
            "description": "Kind of protection; anything else (e.g. 'unprotected') is refused.",
        },
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transport.schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json-schema", action="store_true", help="print the JSON Schema of the message")
    parser.add_argument("--validate", metavar="FILE", help="validate one message per line of FILE ('-' = stdin)")
    args = parser.parse_args(argv)
    if args.json_schema:
        print(json.dumps(JSON_SCHEMA, indent=2))
        return 0
    if args.validate:
        stream = sys.stdin.buffer if args.validate == "-" else open(args.validate, "rb")
        bad = 0
        with stream:
            for n, line in enumerate(stream, 1):
                try:
                    decode_message(line.rstrip(b"\r\n"))
                except SchemaError as exc:
                    bad += 1
                    print(f"line {n}: {exc}")
        return 1 if bad else 0
    parser.print_help()
    return 2


__all__ = [
    "SCHEMA_VERSION",
    "DEFAULT_TOPIC",
    "DLQ_SUFFIX",
    "MAX_MESSAGE_BYTES",
    "MAX_DIM",
    "MAX_ID_LEN",
    "MAX_COORD",
    "MAX_TIMESTAMP_MS",
    "NORM_TOLERANCE",
    "EMBEDDING_DTYPES",
    "ANONYMIZATION_KINDS",
    "FORBIDDEN_ANONYMIZATION",
    "FIELDS",
    "SchemaError",
    "FeatureMessage",
    "encode_embedding",
    "decode_embedding",
    "validate_dict",
    "build_message",
    "encode_message",
    "decode_message",
    "to_dict",
    "JSON_SCHEMA",
    "main",
]


if __name__ == "__main__":
    sys.exit(main())
