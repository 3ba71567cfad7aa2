"""What a pipeline run refuses before any camera starts (exit status 2, with the config key named).

Each check reads one part of the config; the camera-file watcher runs :func:`check_privacy` and
:func:`check_sources` on every camera's own config too, so a bad per-camera override is refused the
same way, naming the camera.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from configs import ConfigError
from privreid.registry import RegistryError
from stream.outputs import check_sink_names


def check_privacy(cfg) -> None:
    """Refuse PRIVACY settings that cannot work before any camera starts (exit 2, key named)."""
    from detectors.motion import MotionSafetyNet

    try:
        MotionSafetyNet.from_config(cfg.PRIVACY)
    except ValueError as exc:
        raise ConfigError(f"PRIVACY.MOTION_*: {exc}") from exc
    from anonymizer.privacy_floor import PrivacyFloor

    try:
        PrivacyFloor(cfg.PRIVACY.FLOOR_SSIM, cfg.PRIVACY.FLOOR_MIN_CHANGED)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if int(cfg.PRIVACY.LOOKAHEAD_FRAMES) < 0:
        raise ConfigError(f"PRIVACY.LOOKAHEAD_FRAMES must be >= 0, got {cfg.PRIVACY.LOOKAHEAD_FRAMES}")


def check_sources(cfg) -> None:
    """Source and output settings under which a camera could not be read, reconnected or written
    durably (exit 2, key named)."""
    src = cfg.SOURCE
    checks = [
        ("SOURCE.RECONNECT_DELAY_S", float(src.RECONNECT_DELAY_S) > 0, "> 0"),
        (
            "SOURCE.RECONNECT_MAX_DELAY_S",
            float(src.RECONNECT_MAX_DELAY_S) >= float(src.RECONNECT_DELAY_S),
            ">= SOURCE.RECONNECT_DELAY_S",
        ),
        ("SOURCE.GIVE_UP_AFTER_S", float(src.GIVE_UP_AFTER_S) >= 0, ">= 0 (0 = never)"),
        ("SOURCE.READ_TIMEOUT_S", float(src.READ_TIMEOUT_S) > 0, "> 0"),
        ("SOURCE.RECONNECT_ATTEMPTS", int(src.RECONNECT_ATTEMPTS) >= 0, ">= 0"),
        ("SOURCE.QUEUE_SIZE", int(src.QUEUE_SIZE) >= 1, ">= 1"),
        ("SOURCE.MAX_PIXELS", int(src.MAX_PIXELS) >= 0, ">= 0 (0 = no limit)"),
        ("OUTPUT.FRAGMENT_S", float(cfg.OUTPUT.FRAGMENT_S) >= 0, ">= 0 (0 = fragments at keyframes only)"),
        ("OUTPUT.LIVE_TIMING", str(cfg.OUTPUT.LIVE_TIMING) in ("wallclock", "frames"), "wallclock or frames"),
        ("OUTPUT.MAX_FILL_S", float(cfg.OUTPUT.MAX_FILL_S) >= 0, ">= 0"),
        ("OUTPUT.KEYFRAME_S", float(cfg.OUTPUT.KEYFRAME_S) >= 0, ">= 0 (0 = the encoder's choice)"),
        (
            "OUTPUT.SEGMENT_S",
            _segment_ok(cfg.OUTPUT.SEGMENT_S, cfg.OUTPUT.FRAGMENT_S),
            f"0 (one video per camera) or a number of seconds >= OUTPUT.FRAGMENT_S ({cfg.OUTPUT.FRAGMENT_S})",
        ),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{key} must be {expected}, got {_config_value(cfg, key)}")
    try:
        check_sink_names(cfg)
    except (ValueError, RegistryError) as exc:
        raise ConfigError(str(exc)) from exc


def _segment_ok(segment_s: Any, fragment_s: Any) -> bool:
    """OUTPUT.SEGMENT_S: 0, or finite seconds no shorter than a fragment (a segment of less than one
    fragment would be all fragment boundaries)."""
    if isinstance(segment_s, bool) or not isinstance(segment_s, (int, float)) or not math.isfinite(segment_s):
        return False
    return segment_s == 0 or segment_s >= float(fragment_s)


def _config_value(cfg, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check_restream(cfg, camera_count: int, dynamic: bool) -> None:
    """A re-stream target that cannot work is refused at start: a bad URL, or one path for several
    cameras (they would overwrite each other's stream)."""
    template = str(cfg.OUTPUT.RESTREAM)
    if not template:
        return
    from stream.restream import restream_url

    try:
        restream_url(template, "cam")
    except ValueError as exc:
        raise ConfigError(f"OUTPUT.RESTREAM / --restream: {exc}") from exc
    if "{camera_id}" not in template and (camera_count > 1 or dynamic):
        raise ConfigError(
            "--restream needs '{camera_id}' in its URL with several cameras (or a camera file), e.g. "
            "rtsp://127.0.0.1:8554/{camera_id}"
        )


def check_output_dir(path: str | Path) -> Path:
    """The output folder, created and proven writable before any camera starts (else exit 2)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"--output {out} is not a writable folder: {exc.strerror or exc}") from exc
    return out


def check_kafka(cfg) -> None:
    """Kafka security settings that cannot connect are refused at start, not on the first send."""
    if cfg.KAFKA.BOOTSTRAP == "off":
        return
    if float(cfg.KAFKA.SPOOL_MAX_MB) * 1024 * 1024 < 4096:
        raise ConfigError(f"KAFKA.SPOOL_MAX_MB must hold at least 4096 bytes (0.004), got {cfg.KAFKA.SPOOL_MAX_MB}")
    from stream.kafka_io import KafkaConfigError, security_config

    try:
        security_config(cfg.KAFKA)
    except KafkaConfigError as exc:
        raise ConfigError(str(exc)) from exc


def check_reid(cfg) -> None:
    """Re-ID settings of a run that publishes (exit 2, key named)."""
    batch = cfg.REID.BATCH
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"REID.BATCH must be a whole number of crops >= 1, got {batch!r}")
