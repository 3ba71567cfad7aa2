"""Container facts OpenCV does not expose (audio streams, creation time, exact frame rate), via ffprobe."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class MediaInfo:
    """What the output must reproduce: frame rate, audio presence and the capture start time."""

    fps: float | None = None
    audio_codec: str | None = None
    creation_time_ms: int | None = None
    nb_frames: int | None = None
    duration_s: float | None = None


def _fraction(text: str | None) -> float | None:
    try:
        value = float(Fraction(text)) if text else None
    except (ValueError, ZeroDivisionError):
        return None
    return value if value and value > 0 else None


def probe(path: str | Path, timeout_s: float = 20.0) -> MediaInfo:
    """Read stream facts with ffprobe; an empty :class:`MediaInfo` when ffprobe is missing or fails."""
    exe = shutil.which("ffprobe")
    if exe is None:
        log.debug("ffprobe not installed: audio will not be copied and timestamps start at run time")
        return MediaInfo()
    cmd = [exe, "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=True).stdout
        data = json.loads(out or b"{}")
    except (subprocess.SubprocessError, json.JSONDecodeError, OSError) as exc:
        log.debug("ffprobe failed on %s: %s", path, exc)
        return MediaInfo()
    info = MediaInfo()
    for stream in data.get("streams", []):
        if stream.get("codec_type") == "video" and info.fps is None:
            info.fps = _fraction(stream.get("avg_frame_rate")) or _fraction(stream.get("r_frame_rate"))
            nb = stream.get("nb_frames")
            info.nb_frames = int(nb) if nb and str(nb).isdigit() else None
        elif stream.get("codec_type") == "audio" and info.audio_codec is None:
            info.audio_codec = stream.get("codec_name")
    fmt = data.get("format", {})
    try:
        info.duration_s = float(fmt["duration"]) if "duration" in fmt else None
    except ValueError:
        pass
    created = (fmt.get("tags") or {}).get("creation_time")
    if created:
        try:
            info.creation_time_ms = int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            pass
    return info
