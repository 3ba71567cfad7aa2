"""The pipeline on real video publishes valid features of protected crops to a real broker; the
embedded mode runs broker and matcher in one command and reports what was published and matched."""

from __future__ import annotations

import json

import numpy as np
import pytest

import run_pipeline
from tests.conftest import shared_path, vtest_path
from tests.kafka_fixtures import read_all, read_jsonl
from tests.video_utils import YOLO_OPENVINO, load_jsonl
from transport.schema import decode_message

OSNET = "reid_models/boxmot_export/osnet_x0_25_msmt17.onnx"
FRAMES = 40


@pytest.mark.timeout(240)
def test_pipeline_publishes_valid_messages(kafka_broker, fresh_topic, tmp_path):
    reid = shared_path(OSNET)
    detector = shared_path(YOLO_OPENVINO)
    code = run_pipeline.main(
        [
            "--source",
            str(vtest_path()),
            "--camera-id",
            "lobby",
            "--output",
            str(tmp_path),
            "--max-frames",
            str(FRAMES),
            "--detector",
            str(detector),
            "--anonymizer",
            "mosaic",
            "--kafka",
            kafka_broker.bootstrap,
            "KAFKA.TOPIC",
            fresh_topic,
            "KAFKA.EVERY_KTH",
            "2",
            "REID.MODEL",
            str(reid),
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "lobby.summary.json").read_text())
    assert summary["published"] > 0
    records = read_all(kafka_broker.bootstrap, fresh_topic, expect=summary["published"])
    assert len(records) == summary["published"]
    observations = load_jsonl(tmp_path / "lobby.observations.jsonl")
    tracked = {(o["frame_index"], o["track_id"]) for o in observations if o["track_id"] >= 0 and not o["held"]}
    per_track: dict[int, list[int]] = {}
    for rec in records:
        assert rec.key == b"lobby"
        msg = decode_message(rec.value)  # validates the contract
        assert msg.camera_id == "lobby" and msg.anonymization == "mosaic"
        assert msg.dim == 512 and abs(float(np.linalg.norm(msg.embedding)) - 1.0) < 1e-2
        assert len(msg.reid_fingerprint) == 64 and len(msg.anonymizer_fingerprint) == 64
        assert (msg.frame_index, msg.track_id) in tracked  # one message per published observation
        per_track.setdefault(msg.track_id, []).append(msg.frame_index)
    # every-k-th: a track's 1st, 3rd, 5th ... observation is published, so about half of them
    assert summary["published"] < 0.7 * len(tracked)
    assert all(frames == sorted(frames) for frames in per_track.values())


@pytest.mark.timeout(300)
@pytest.mark.slow  # broker, two cameras and the matcher
def test_embedded_mode_runs_broker_and_matcher(tmp_path, capsys):
    reid = shared_path(OSNET)
    code = run_pipeline.main(
        [
            "--source",
            str(vtest_path()),
            "--camera-id",
            "a",
            "--source",
            str(vtest_path()),
            "--camera-id",
            "b",
            "--output",
            str(tmp_path),
            "--max-frames",
            "25",
            "--detector",
            "hog",
            "--anonymizer",
            "blur",
            "--kafka",
            "embedded",
            "REID.MODEL",
            str(reid),
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "kafka:" in printed
    published = sum(json.loads((tmp_path / f"{c}.summary.json").read_text())["published"] for c in "ab")
    assert published > 0
    kafka_summary = json.loads(printed.split("kafka:", 1)[1].strip().splitlines()[0])
    assert kafka_summary["publisher"]["delivered"] == published
    events = read_jsonl(tmp_path / "matches.jsonl")
    assert events, "the matcher emitted no identity event"
    cams = {e["camera_id"] for e in events}
    assert cams == {"a", "b"}
