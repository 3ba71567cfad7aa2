"""The camera list file: strict validation, per-camera config, and reload while running."""

from __future__ import annotations

import logging
import os
import signal
import textwrap
import threading
from pathlib import Path

import pytest

from configs import CONFIG_DIR, ConfigError, build_config
from configs.pipeline_defaults import get_pipeline_defaults
from stream.cameras import (
    CameraEntry,
    CameraFileWatcher,
    camera_config,
    is_per_camera_key,
    load_camera_file,
    zones_to_boxes,
)

VALID = """\
cameras:
  - id: door
    url: rtsp://192.0.2.5/stream
    fps: 10
    zones: [[0, 0, 200, 120], [0.5, 0.5, 1, 1]]
    overrides: {DETECTOR.CONF: 0.3, TRACKER.HOLD_FRAMES: 30, PRIVACY.MOTION_NET: off}
  - id: hall
    url: frames/
"""


def write(path: Path, text: str, mtime_ns: int | None = None) -> Path:
    path.write_text(textwrap.dedent(text))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def old_mtime() -> int:
    """Well in the past, so the watcher does not treat the file as possibly re-edited within one tick."""
    return (int(os.stat(__file__).st_mtime) - 100) * 1_000_000_000


def test_valid_file_parses(tmp_path):
    cams = load_camera_file(write(tmp_path / "c.yaml", VALID))
    assert [c.id for c in cams] == ["door", "hall"]
    door, hall = cams
    assert door.url == "rtsp://192.0.2.5/stream" and door.fps == 10.0
    assert door.zones == ((0.0, 0.0, 200.0, 120.0), (0.5, 0.5, 1.0, 1.0))
    assert dict(door.overrides) == {"DETECTOR.CONF": 0.3, "TRACKER.HOLD_FRAMES": 30, "PRIVACY.MOTION_NET": False}
    assert hall == CameraEntry("hall", "frames/", None, (), ())
    assert hash(door) == hash(load_camera_file(tmp_path / "c.yaml")[0])  # hashable, equal when unchanged


def test_example_file_is_valid():
    cams = load_camera_file(CONFIG_DIR / "cameras.example.yaml")
    assert len(cams) >= 2 and all(c.url for c in cams)


def test_webcam_index_url(tmp_path):
    assert load_camera_file(write(tmp_path / "c.yaml", "cameras:\n  - {id: cam, url: 0}\n"))[0].url == "0"


@pytest.mark.parametrize(
    "camera, field",
    [
        ("{url: a.mp4}", "id"),
        ("{id: 'bad id', url: a.mp4}", "id"),
        ("{id: '" + "x" * 65 + "', url: a.mp4}", "id"),
        ("{id: 7, url: a.mp4}", "id"),
        ("{id: a}", "url"),
        ("{id: a, url: ''}", "url"),
        ("{id: a, url: [x]}", "url"),
        ("{id: a, url: a.mp4, fps: 0}", "fps"),
        ("{id: a, url: a.mp4, fps: -5}", "fps"),
        ("{id: a, url: a.mp4, fps: fast}", "fps"),
        ("{id: a, url: a.mp4, fps: true}", "fps"),
        ("{id: a, url: a.mp4, zones: [0, 0, 1, 1]}", "zones"),
        ("{id: a, url: a.mp4, zones: [[0, 0, 1]]}", "zones"),
        ("{id: a, url: a.mp4, zones: [[10, 0, 5, 20]]}", "zones"),
        ("{id: a, url: a.mp4, zones: [[0, 20, 5, 20]]}", "zones"),
        ("{id: a, url: a.mp4, zones: [[-1, 0, 5, 5]]}", "zones"),
        ("{id: a, url: a.mp4, zones: [[0, 0, x, 5]]}", "zones"),
        ("{id: a, url: a.mp4, zones: {a: 1}}", "zones"),
        ("{id: a, url: a.mp4, overrides: [DETECTOR.CONF, 0.3]}", "overrides"),
        ("{id: a, url: a.mp4, overrides: {DETECTOR.CONFIDENCE: 0.3}}", "DETECTOR.CONFIDENCE"),
        ("{id: a, url: a.mp4, overrides: {DETECTOR.KIND: hog}}", "DETECTOR.KIND"),
        ("{id: a, url: a.mp4, overrides: {DETECTOR.MASK_CONF: 0.5}}", "DETECTOR.MASK_CONF"),
        ("{id: a, url: a.mp4, overrides: {KAFKA.TOPIC: x}}", "KAFKA.TOPIC"),
        ("{id: a, url: a.mp4, overrides: {DETECTOR.CONF: high}}", "DETECTOR.CONF"),
        ("{id: a, url: a.mp4, overrides: {DETECTOR.CONF: 0.01}}", "DETECTOR.CONF"),
        ("{id: a, url: a.mp4, overrides: {TRACKER.HOLD_FRAMES: 2.5}}", "TRACKER.HOLD_FRAMES"),
        ("{id: a, url: a.mp4, overrides: {SOURCE.LIVE_DROP_OLD: 1}}", "SOURCE.LIVE_DROP_OLD"),
        ("{id: a, url: a.mp4, overrides: {ANONYMIZER.MARGIN: -0.1}}", "ANONYMIZER.MARGIN"),
        ("{id: a, url: a.mp4, overrides: {ANONYMIZER.MIN_ASPECT: 3}}", "ANONYMIZER.MIN_ASPECT"),
        ("{id: a, url: a.mp4, overrides: {SOURCE: {QUEUE_SIZE: 2}}}", "SOURCE.QUEUE_SIZE"),
        ("{id: a, url: a.mp4, zone: [[0, 0, 5, 5]]}", "zone"),
        ("{id: a, url: a.mp4, url: b.mp4}", "url"),
        ("just-a-string", "camera #2"),
    ],
)
def test_invalid_entry_refused_with_field_named(tmp_path, camera, field):
    path = write(tmp_path / "cams.yaml", f"cameras:\n  - {{id: ok, url: x.mp4}}\n  - {camera}\n")
    with pytest.raises(ConfigError) as err:
        load_camera_file(path)
    message = str(err.value)
    assert str(path) in message and field in message
    if "id: a" in camera and "url: b.mp4" not in camera:  # a duplicate key is named with its line instead
        assert "'a'" in message  # the camera is named


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "cameras"),
        ("cameras:\n", "cameras"),
        ("cameras: {id: a}\n", "cameras"),
        ("camera:\n  - {id: a, url: b}\n", "cameras"),
        ("cameras: []\nextra: 1\n", "extra"),
        ("cameras:\n  - {id: a, url: b}\n  - {id: a, url: c}\n", "twice"),
        ("cameras: [\n", "parse"),
    ],
)
def test_invalid_file_refused(tmp_path, text, needle):
    path = write(tmp_path / "cams.yaml", text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_camera_file(path)
    assert str(path) in str(err.value)


def test_missing_file_refused(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_camera_file(tmp_path / "nope.yaml")


def test_overrides_applied_to_camera_cfg(tmp_path):
    base = build_config(get_pipeline_defaults(), None, ["DETECTOR.CONF", "0.4", "KAFKA.TOPIC", "'t'"])
    door, hall = load_camera_file(write(tmp_path / "c.yaml", VALID), base_cfg=base)
    cfg = camera_config(base, door)
    assert cfg.DETECTOR.CONF == 0.3 and cfg.TRACKER.HOLD_FRAMES == 30 and cfg.PRIVACY.MOTION_NET == "off"
    assert cfg.KAFKA.TOPIC == "t" and cfg.is_frozen()
    assert base.DETECTOR.CONF == 0.4 and base.TRACKER.HOLD_FRAMES == 15  # the base is untouched
    assert camera_config(base, hall) == base
    widened = CameraEntry("c", "x", overrides=(("SOURCE.READ_TIMEOUT_S", 3),))
    assert camera_config(base, widened).SOURCE.READ_TIMEOUT_S == 3.0  # an int where a float is expected


def test_bad_override_refused():
    base = get_pipeline_defaults()
    with pytest.raises(ConfigError, match="camera 'c'.*DETECTOR.CONF"):
        camera_config(base, CameraEntry("c", "x", overrides=(("DETECTOR.CONF", "high"),)))
    with pytest.raises(ConfigError, match="OUTPUT.CRF cannot be set per camera"):
        camera_config(base, CameraEntry("c", "x", overrides=(("OUTPUT.CRF", 18),)))
    assert is_per_camera_key("SOURCE.QUEUE_SIZE") and not is_per_camera_key("ANONYMIZER.KIND")


def test_check_hook_refuses_camera(tmp_path):
    def check(cfg):
        if cfg.SOURCE.READ_TIMEOUT_S <= 0:
            raise ConfigError(f"SOURCE.READ_TIMEOUT_S must be > 0, got {cfg.SOURCE.READ_TIMEOUT_S}")

    path = write(tmp_path / "c.yaml", "cameras:\n  - {id: a, url: b, overrides: {SOURCE.READ_TIMEOUT_S: 0}}\n")
    with pytest.raises(ConfigError, match="camera 'a'.*SOURCE.READ_TIMEOUT_S"):
        load_camera_file(path, check=check)


ONE = "cameras:\n  - {id: door, url: rtsp://192.0.2.5/a}\n"
TWO = ONE + "  - {id: hall, url: rtsp://192.0.2.6/b}\n"


def test_watcher_add_remove_change(tmp_path):
    path = write(tmp_path / "c.yaml", ONE)
    w = CameraFileWatcher(path, poll_s=0)
    assert [c.id for c in w.cameras] == ["door"] and w.poll() is None
    write(path, TWO)
    ch = w.poll()
    assert [c.id for c in ch.added] == ["hall"] and not ch.removed and not ch.changed
    assert w.poll() is None  # reported once
    write(path, TWO.replace("192.0.2.5/a", "192.0.2.7/a"))
    ch = w.poll()
    assert [c.url for c in ch.changed] == ["rtsp://192.0.2.7/a"] and not ch.added and not ch.removed
    write(path, "cameras:\n  - {id: hall, url: rtsp://192.0.2.6/b}\n")
    ch = w.poll()
    assert [c.id for c in ch.removed] == ["door"] and [c.id for c in ch.cameras] == ["hall"]


def test_watcher_same_size_edit_in_same_tick(tmp_path):
    """An edit that keeps size and mtime (coarse timestamps) right after a read is still seen."""
    path = write(tmp_path / "c.yaml", ONE)
    w = CameraFileWatcher(path, poll_s=0)
    mtime = os.stat(path).st_mtime_ns
    write(path, ONE.replace("/a}", "/z}"), mtime_ns=mtime)
    assert [c.url for c in w.poll().changed] == ["rtsp://192.0.2.5/z"]


def test_watcher_rate_limited(tmp_path):
    path = write(tmp_path / "c.yaml", ONE)
    w = CameraFileWatcher(path, poll_s=3600)
    write(path, TWO)
    assert w.poll() is None  # too soon: the main loop may call poll() on every frame


def test_watcher_invalid_edit_keeps_list_then_fixed(tmp_path, caplog):
    path = write(tmp_path / "c.yaml", ONE)
    w = CameraFileWatcher(path, poll_s=0)
    write(path, TWO.replace("id: hall", "id: 'bad id'"))
    with caplog.at_level(logging.ERROR, logger="stream.cameras"):
        assert w.poll() is None
        assert w.poll() is None  # same bad content: not logged again
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "id" in errors[0].getMessage() and str(path) in errors[0].getMessage()
    assert [c.id for c in w.cameras] == ["door"]
    write(path, ONE)  # reverted: nothing to do, but the same bad edit again is reported again
    assert w.poll() is None
    write(path, TWO.replace("id: hall", "id: 'bad id'"))
    with caplog.at_level(logging.ERROR, logger="stream.cameras"):
        assert w.poll() is None
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    path.unlink()
    assert w.poll() is None and [c.id for c in w.cameras] == ["door"]  # a vanished file stops nothing
    write(path, TWO)
    ch = w.poll()
    assert [c.id for c in ch.added] == ["hall"] and [c.id for c in w.cameras] == ["door", "hall"]


def test_watcher_refuses_invalid_file_at_start(tmp_path):
    with pytest.raises(ConfigError, match="url"):
        CameraFileWatcher(write(tmp_path / "c.yaml", "cameras:\n  - {id: a}\n"))


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_without_mtime_change(tmp_path):
    mtime = old_mtime()
    path = write(tmp_path / "c.yaml", ONE, mtime_ns=mtime)
    w = CameraFileWatcher(path, poll_s=0)
    assert w.poll() is None  # the first read is done; the file is old, so not re-hashed
    write(path, ONE.replace("/a}", "/z}"), mtime_ns=mtime)  # same size, same mtime, same inode
    assert w.poll() is None
    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert w.install_sighup()
        os.kill(os.getpid(), signal.SIGHUP)
        ch = w.poll()
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert [c.url for c in ch.changed] == ["rtsp://192.0.2.5/z"]


def test_install_sighup_off_main_thread_is_noop(tmp_path):
    w = CameraFileWatcher(write(tmp_path / "c.yaml", ONE))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(w.install_sighup()))
    t.start()
    t.join()
    assert result == [False]


def test_zones_to_boxes_fractions_and_clipping():
    zones = ((0.5, 0.0, 1.0, 0.5), (600, 400, 900, 700), (10, 10, 50, 50), (700, 0, 800, 10))
    assert zones_to_boxes(zones, 640, 480) == [
        (320.0, 0.0, 640.0, 240.0),
        (600.0, 400.0, 640.0, 480.0),
        (10.0, 10.0, 50.0, 50.0),
    ]  # the last is outside: dropped
    assert zones_to_boxes((), 640, 480) == []
