"""Helpers for video tests: decode all frames, probe streams, compare regions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np

YOLO_OPENVINO = "detector_models/ultralytics/yolov8n_int8_openvino_model"


def read_frames(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def probe_streams(path: str | Path) -> list[dict]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames,r_frame_rate,width,height",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
    ).stdout
    return json.loads(out)["streams"]


def video_stream(path: str | Path) -> dict:
    return next(s for s in probe_streams(path) if s["codec_type"] == "video")


def load_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def reencode(src: str | Path, dst: str | Path, frames: int) -> Path:
    """The raw video through the pipeline's codec settings: the SSIM a raw region would keep."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-frames:v",
            str(frames),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            str(dst),
        ],
        check=True,
    )
    return Path(dst)
