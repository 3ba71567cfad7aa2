"""The feature contract: what producers may send and what consumers accept (transport/schema.py)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from transport import schema
from transport.schema import SchemaError, build_message, decode_message, encode_message

REPO = Path(__file__).resolve().parents[1]
FP = "ab" * 32


def _msg(**kw):
    args = dict(
        camera_id="cam-1",
        session_id="0" * 32,
        frame_index=7,
        timestamp_ms=1_700_000_000_123,
        track_id=3,
        box=(10.0, 20.0, 50.5, 120.0),
        score=0.87,
        embedding=np.random.default_rng(0).normal(size=512).astype(np.float32),
        reid_fingerprint=FP,
        anonymizer_fingerprint="cd" * 32,
        anonymization="mosaic",
    )
    args.update(kw)
    return build_message(**args)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_keeps_fields_and_unit_embedding(dtype):
    vec = np.random.default_rng(1).normal(size=512).astype(np.float32)
    msg = decode_message(encode_message(_msg(embedding=vec, embedding_dtype=dtype)))
    assert (msg.camera_id, msg.frame_index, msg.timestamp_ms, msg.track_id) == ("cam-1", 7, 1_700_000_000_123, 3)
    assert msg.box == (10.0, 20.0, 50.5, 120.0) and msg.embedding_dtype == dtype and msg.dim == 512
    assert msg.embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(msg.embedding)) - 1.0) < 1e-5
    cos = float(msg.embedding @ (vec / np.linalg.norm(vec)))
    assert cos > (0.9999 if dtype == "float16" else 0.999999)


def test_float16_is_the_compact_default():
    m16 = encode_message(_msg())
    m32 = encode_message(_msg(embedding_dtype="float32"))
    assert json.loads(m16)["embedding_dtype"] == "float16"
    assert len(m16) < 0.65 * len(m32)


def test_producer_side_refuses_contract_violations():
    with pytest.raises(SchemaError, match="anonymization"):
        _msg(anonymization="none")  # features of raw crops must never be published
    with pytest.raises(SchemaError, match="score"):
        _msg(score=1.5)
    with pytest.raises(SchemaError, match="reid_fingerprint"):
        _msg(reid_fingerprint="not-a-sha")
    with pytest.raises(SchemaError, match="norm"):
        _msg(embedding=np.zeros(512, np.float32))
    with pytest.raises(SchemaError, match="norm"):
        _msg(embedding=np.full(512, np.nan, np.float32))
    with pytest.raises(SchemaError, match="box"):
        _msg(box=(50, 20, 10, 120))
    with pytest.raises(SchemaError):
        _msg(camera_id="cam with spaces")
    with pytest.raises(SchemaError, match="anonymization"):
        _msg(anonymization="unprotected")
    for kind in schema.ANONYMIZATION_KINDS:  # every protection the pipeline publishes is accepted
        assert _msg(anonymization=kind)["anonymization"] == kind


def _wire(**changes) -> dict:
    d = json.loads(encode_message(_msg()))
    d.update(changes)
    return d


HOSTILE = {
    "not json": (b"{not json", "bad_json"),
    "not utf8": (b"\xff\xfe\x00", "bad_json"),
    "array": (b"[1,2,3]", "bad_type"),
    "null value": (None, "bad_json"),
    "NaN literal": (encode_message(_wire()).replace(b'"score":0.87', b'"score":NaN'), "bad_json"),
    "duplicate key": (
        encode_message(_wire()).replace(b'{"schema_version":1,', b'{"schema_version":1,"schema_version":1,'),
        "bad_json",
    ),
    "huge": (b'{"a":"' + b"x" * (schema.MAX_MESSAGE_BYTES + 10) + b'"}', "too_large"),
    "deep nesting": (b"[" * 30000 + b"]" * 30000, "bad_json"),
    "version 2": (json.dumps(_wire(schema_version=2)).encode(), "bad_version"),
    "bool version": (json.dumps(_wire(schema_version=True)).encode(), "bad_version"),
    "missing field": (json.dumps({k: v for k, v in _wire().items() if k != "track_id"}).encode(), "missing_field"),
    "extra field": (json.dumps(_wire(face_jpeg="AAAA")).encode(), "unknown_field"),
    "string frame": (json.dumps(_wire(frame_index="7")).encode(), "bad_type"),
    "bool track": (json.dumps(_wire(track_id=True)).encode(), "bad_type"),
    "negative ts": (json.dumps(_wire(timestamp_ms=-1)).encode(), "bad_value"),
    "box of 3": (json.dumps(_wire(box=[1, 2, 3])).encode(), "bad_type"),
    "huge box": (json.dumps(_wire(box=[0, 0, 1e300, 5])).encode(), "bad_value"),
    "wrong dim": (json.dumps(_wire(embedding_dim=256)).encode(), "bad_embedding"),
    "bad base64": (json.dumps(_wire(embedding="!" * 1368)).encode(), "bad_embedding"),
    "bad dtype": (json.dumps(_wire(embedding_dtype="int8")).encode(), "bad_value"),
    "NaN embedding": (
        json.dumps(_wire(embedding=base64.b64encode(np.full(512, np.nan, "<f2").tobytes()).decode())).encode(),
        "bad_embedding",
    ),
    "unnormalised": (
        json.dumps(_wire(embedding=base64.b64encode(np.full(512, 1.0, "<f2").tobytes()).decode())).encode(),
        "bad_embedding",
    ),
    "raw crops": (json.dumps(_wire(anonymization="none")).encode(), "bad_value"),
    "long camera": (json.dumps(_wire(camera_id="c" * 500)).encode(), "bad_value"),
    # `$` also matches before a trailing newline: ids are checked with fullmatch
    "camera newline": (json.dumps(_wire(camera_id="evil\n")).encode(), "bad_value"),
    "session newline": (json.dumps(_wire(session_id="0" * 32 + "\n")).encode(), "bad_value"),
    "fingerprint newline": (json.dumps(_wire(reid_fingerprint="ab" * 32 + "\n")).encode(), "bad_value"),
    "unprotected": (json.dumps(_wire(anonymization="unprotected")).encode(), "bad_value"),
    "unknown kind": (json.dumps(_wire(anonymization="pixelate")).encode(), "bad_value"),
    "kind newline": (json.dumps(_wire(anonymization="mosaic\n")).encode(), "bad_value"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_consumer_side_rejects_hostile_input_with_a_reason(name):
    value, reason = HOSTILE[name]
    with pytest.raises(SchemaError) as info:
        decode_message(value)
    assert info.value.reason == reason, str(info.value)


def test_json_schema_agrees_with_the_validator():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(schema.JSON_SCHEMA)
    validator.check_schema(schema.JSON_SCHEMA)
    assert not list(validator.iter_errors(json.loads(encode_message(_msg()))))
    assert not list(validator.iter_errors(json.loads(encode_message(_msg(embedding_dtype="float32")))))
    structural = [
        "version 2",
        "bool version",
        "missing field",
        "extra field",
        "string frame",
        "bool track",
        "negative ts",
        "box of 3",
        "huge box",
        "bad dtype",
        "raw crops",
        "long camera",
        "camera newline",
        "session newline",
        "fingerprint newline",
        "unprotected",
        "unknown kind",
        "kind newline",
    ]
    for name in structural:  # what JSON Schema can express, it must reject too
        doc = json.loads(HOSTILE[name][0])
        assert list(validator.iter_errors(doc)), name


def test_cli_prints_the_schema_and_the_doc_copy_is_current():
    out = subprocess.run(
        [sys.executable, "-m", "stream.schema", "--json-schema"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == schema.JSON_SCHEMA
    doc = REPO / "docs" / "kafka-contract.schema.json"
    assert json.loads(doc.read_text()) == schema.JSON_SCHEMA, "regenerate: python -m stream.schema --json-schema"
