"""A ``.pt`` detector file must never run code: crafted pickles are refused before anything executes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

PAYLOAD = textwrap.dedent("""
    import os, sys, torch
    marker = sys.argv[2]
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + marker,))
    torch.save({"model": Payload(), "train_args": {}}, sys.argv[1])
""")


def _crafted_pickle(tmp_path: Path) -> tuple[Path, Path]:
    """An Ultralytics-looking checkpoint whose unpickling runs ``touch MARKER``."""
    evil, marker = tmp_path / "evil.pt", tmp_path / "PAYLOAD_RAN"
    subprocess.run([sys.executable, "-c", PAYLOAD, str(evil), str(marker)], check=True)
    assert evil.is_file() and not marker.exists()
    return evil, marker


def _tiny_video(tmp_path: Path) -> Path:
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(3):
        writer.write(np.full((120, 160, 3), 40 * i, np.uint8))
    writer.release()
    return path


def test_crafted_pickle_is_refused_by_the_pipeline_and_its_payload_never_runs(tmp_path):
    evil, marker = _crafted_pickle(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "run_pipeline.py"),
            "--source",
            str(_tiny_video(tmp_path)),
            "--output",
            str(tmp_path / "out"),
            "--detector",
            str(evil),
            "--anonymizer",
            "mosaic",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refused to load this PyTorch checkpoint" in proc.stderr
    assert "ONNX or OpenVINO" in proc.stderr
    assert not marker.exists(), "the pickle's payload ran"


def test_auto_detector_with_crafted_weights_falls_back_to_hog_without_running_them(tmp_path):
    from configs import build_config
    from configs.pipeline_defaults import get_pipeline_defaults
    from detectors.factory import build_detector

    evil, marker = _crafted_pickle(tmp_path)
    cfg = build_config(get_pipeline_defaults(), None, ["DETECTOR.WEIGHTS", repr(str(evil))])
    detector = build_detector("auto", cfg.DETECTOR)
    assert "hog" in detector.name.lower()
    assert not marker.exists()


def test_genuine_ultralytics_checkpoint_still_loads(tmp_path):
    """The allow-list must not refuse what Ultralytics itself writes (a model built from its yaml)."""
    pytest.importorskip("ultralytics")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    from detectors.ultralytics_detector import UltralyticsDetector

    model = YOLO("yolov8n.yaml")  # architecture only, random weights: nothing downloaded
    model.model.names = {0: "person", **{i: f"class{i}" for i in range(1, 80)}}
    path = tmp_path / "genuine.pt"
    torch.save({"model": model.model, "train_args": {}}, path)
    detector = UltralyticsDetector(path, imgsz=160)
    out = detector.detect([np.zeros((120, 160, 3), np.uint8)])
    assert len(out) == 1
