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


@pytest.mark.timeout(240)
def test_a_scrambling_bundle_publishes_features_of_the_crop_before_the_scramble(kafka_broker, fresh_topic, tmp_path):
    """With a payload on a mosaic the video and the sidecar get the scrambled crop, while C's published
    features are those of the crop before the scramble (which the key holder can rebuild from the
    sidecar with the recovery key, and nobody else can)."""
    import cv2

    from anonymizer import load_bundle, load_recovery
    from anonymizer.bundle_files import fit_crop
    from anonymizer.sidecar import read_sidecar, sidecar_key
    from tests.test_bundle import make_tiny_bundle

    key = tmp_path / "recovery.key"
    bundle_path = make_tiny_bundle(  # C with its own payload reader, as the issue-16 recipe trains it
        tmp_path / "scrambling", key, onnx=True, skip_mosaic_block=6, payload=(0.1, 0), c_front_ngf=8
    )
    out = tmp_path / "out"
    code = run_pipeline.main(
        [
            "--source",
            str(vtest_path()),
            "--camera-id",
            "lobby",
            "--output",
            str(out),
            "--max-frames",
            "12",
            "--detector",
            str(shared_path(YOLO_OPENVINO)),
            "--anonymizer",
            str(bundle_path),
            "--kafka",
            kafka_broker.bootstrap,
            "KAFKA.TOPIC",
            fresh_topic,
            "ANONYMIZER.SIDECAR",
            "True",
            "LOG.PROGRESS",
            "False",
        ]
    )
    assert code == 0
    summary = json.loads((out / "lobby.summary.json").read_text())
    records = read_all(kafka_broker.bootstrap, fresh_topic, expect=summary["published"])
    assert summary["published"] > 0 and len(records) == summary["published"]
    bundle, recovery = load_bundle(bundle_path), load_recovery(bundle_path, key)
    assert recovery.unscrambler is not None
    regions = {
        (o["frame_index"], o["track_id"]): o["region"]
        for o in load_jsonl(out / "lobby.observations.jsonl")
        if o.get("region") and o.get("protected")
    }
    sidecar = read_sidecar(out / "lobby.crops")
    checked = 0
    for rec in records:
        msg = decode_message(rec.value)
        region = regions[(msg.frame_index, msg.track_id)]
        crops = sidecar[sidecar_key(msg.frame_index, region)]
        native, pasted = crops["native"], crops["region"].crop
        assert native.sealed_seed is not None
        plain = fit_crop(recovery.unscrambler.restore(native.crop, native.sealed_seed), pasted)
        assert not np.array_equal(plain, pasted)  # what left the pipeline is scrambled
        expected, scrambled = bundle.embed([plain])[0], bundle.embed([pasted])[0]
        got = np.asarray(msg.embedding, np.float32)
        assert float(got @ expected) > 0.99999 and float(got @ expected) > float(got @ scrambled)
        checked += 1
    assert checked == len(records)
    # the video shows the scrambled crops too
    cap = cv2.VideoCapture(str(out / "lobby.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"]
