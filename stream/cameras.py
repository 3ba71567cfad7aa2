"""The camera list file (``run_pipeline.py --cameras cameras.yaml``) and its reload while running.

Operators edit one file instead of restarting with a changed ``--source`` list; the pipeline polls
:class:`CameraFileWatcher` and starts, stops or restarts only the cameras whose entry changed.
Validation is strict because a silently ignored typo (``zone:`` for ``zones:``) would leave people
unmasked: unknown keys, duplicate keys and per-camera overrides outside :data:`PER_CAMERA_KEYS`
are refused, and errors name the file, the camera and the field. See configs/cameras.example.yaml.

Per-camera overrides are limited to settings the pipeline reads per camera: each camera has its
own reader, tracker, regions, redactor settings (``ANONYMIZER.MARGIN``, ``ANONYMIZER.MIN_ASPECT`` and the privacy floor
``PRIVACY.FLOOR_*``, applied by the shared anonymizer's redactor per camera) and video sink
(``OUTPUT.SEGMENT_S``: one camera in hour-long segments, another in one file). Everything else is
one object shared by all cameras (the detector runs batched across cameras, one anonymizer, one
encoder setting, one Kafka producer), so a per-camera value could not take effect.
``DETECTOR.MASK_CONF`` is left out on purpose: the shared detector reports nothing below the
global value, so per camera it could only be raised, which unmasks people.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from configs import CfgNode, ConfigError, apply_overrides
from configs.pipeline_defaults import get_pipeline_defaults

log = logging.getLogger(__name__)

PER_CAMERA_SECTIONS = ("SOURCE", "PRIVACY", "TRACKER")  # every key of these sections
PER_CAMERA_KEYS = ("DETECTOR.CONF", "ANONYMIZER.MARGIN", "ANONYMIZER.MIN_ASPECT", "OUTPUT.SEGMENT_S")  # plus these
CAMERA_ID = r"[A-Za-z0-9_.-]{1,64}"
CAMERA_FIELDS = ("id", "url", "fps", "zones", "overrides")
Zone = tuple[float, float, float, float]


@dataclass(frozen=True)
class CameraEntry:
    """One camera of the file; frozen and hashable so that a changed entry is found by ``!=``."""

    id: str
    url: str
    fps: float | None = None
    zones: tuple[Zone, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()  # (KEY, YAML value), sorted by key


@dataclass(frozen=True)
class CameraChanges:
    """What a reload changed; ``cameras`` is the whole new list, in file order."""

    added: tuple[CameraEntry, ...]
    removed: tuple[CameraEntry, ...]
    changed: tuple[CameraEntry, ...]  # the new entries of ids whose entry differs
    cameras: tuple[CameraEntry, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class _StrictLoader(yaml.SafeLoader):
    """safe_load keeps the last of two equal keys; a duplicated ``url:`` must be an error instead."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def is_per_camera_key(key: str) -> bool:
    return key in PER_CAMERA_KEYS or key.split(".", 1)[0] in PER_CAMERA_SECTIONS


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_zone(raw: Any) -> Zone:
    if not isinstance(raw, (list, tuple)) or len(raw) != 4 or not all(_number(v) for v in raw):
        raise ValueError(f"each zone must be [x1, y1, x2, y2] (4 numbers), got {raw!r}")
    x1, y1, x2, y2 = (float(v) for v in raw)
    if min(x1, y1, x2, y2) < 0 or x2 <= x1 or y2 <= y1:
        raise ValueError(f"zone {raw!r} needs 0 <= x1 < x2 and 0 <= y1 < y2")
    return (x1, y1, x2, y2)


def _parse_entry(raw: Any, path: Path, index: int) -> CameraEntry:
    where = f"{path}: camera #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with id and url, got {raw!r}")
    cam_id = raw.get("id")
    if not isinstance(cam_id, str) or not re.fullmatch(CAMERA_ID, cam_id):
        raise ConfigError(f"{where}: id: must be 1-64 letters, digits, '_', '.', '-' (quote numbers), got {cam_id!r}")
    where = f"{path}: camera '{cam_id}'"
    unknown = sorted(set(map(str, raw)) - set(CAMERA_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} (allowed: {', '.join(CAMERA_FIELDS)})")
    url = raw.get("url")
    if isinstance(url, int) and not isinstance(url, bool) and url >= 0:
        url = str(url)  # a webcam index, as with --source 0
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{where}: url: must be a non-empty string (file, folder, rtsp:// URL, webcam), got {url!r}")
    fps = raw.get("fps")
    if fps is not None and (not _number(fps) or fps <= 0):
        raise ConfigError(f"{where}: fps: must be a number > 0 (or absent for no cap), got {fps!r}")
    zones_raw = raw.get("zones") or []
    if not isinstance(zones_raw, list):
        raise ConfigError(f"{where}: zones: must be a list of [x1, y1, x2, y2], got {zones_raw!r}")
    try:
        zones = tuple(_parse_zone(z) for z in zones_raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: zones: {exc}") from exc
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError(f"{where}: overrides: must be a mapping KEY: VALUE, got {overrides!r}")
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()))
    return CameraEntry(cam_id, url.strip(), None if fps is None else float(fps), zones, frozen)


def _override_text(default: Any, value: Any) -> str:
    """YAML values as the ``KEY VALUE`` text apply_overrides parses, with merge_file's one widening:
    a bare on/off (a YAML boolean) for a string key is that word."""
    if isinstance(default, str) and isinstance(value, bool):
        return repr("on" if value else "off")
    return repr(value)


def camera_config(base_cfg: CfgNode, entry: CameraEntry, path: str | Path | None = None) -> CfgNode:
    """A frozen clone of ``base_cfg`` with the camera's overrides, type-checked like command-line ones
    (``path`` only names the file in errors)."""
    where = (f"{path}: " if path else "") + f"camera '{entry.id}': overrides"
    cfg = base_cfg.clone()
    cfg.defrost()
    flat: list[str] = []
    for key, value in entry.overrides:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, CfgNode) else None
        if isinstance(node, CfgNode):
            raise ConfigError(f"{where}: {key} is a section: name each key ({key}.{next(iter(node))}: ...)")
        if node is not None and not is_per_camera_key(key):  # an unknown key: apply_overrides names it
            raise ConfigError(
                f"{where}: {key} cannot be set per camera (allowed: "
                f"{', '.join(PER_CAMERA_KEYS)}, {', '.join(s + '.*' for s in PER_CAMERA_SECTIONS)})"
            )
        flat += [key, _override_text(node, value)]
    try:
        apply_overrides(cfg, flat)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    # refused later at camera start otherwise (detector factory, redactor): name the camera now
    if not float(cfg.DETECTOR.MASK_CONF) <= float(cfg.DETECTOR.CONF) <= 1.0:
        raise ConfigError(
            f"{where}: DETECTOR.CONF must be in "
            f"[DETECTOR.MASK_CONF ({cfg.DETECTOR.MASK_CONF}), 1], got {cfg.DETECTOR.CONF}"
        )
    if float(cfg.ANONYMIZER.MARGIN) < 0:
        raise ConfigError(f"{where}: ANONYMIZER.MARGIN must be >= 0, got {cfg.ANONYMIZER.MARGIN}")
    if not 0.0 <= float(cfg.ANONYMIZER.MIN_ASPECT) <= 2.0:
        raise ConfigError(f"{where}: ANONYMIZER.MIN_ASPECT must be in [0, 2], got {cfg.ANONYMIZER.MIN_ASPECT}")
    cfg.freeze()
    return cfg


def _parse_text(
    text: str, path: Path, base_cfg: CfgNode | None, check: Callable[[CfgNode], None] | None
) -> list[CameraEntry]:
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # SafeLoader + duplicate keys refused
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    if not isinstance(doc, dict) or "cameras" not in doc:
        raise ConfigError(f"{path}: expected a mapping with a 'cameras' list")
    if set(doc) != {"cameras"}:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(map(str, set(doc) - {'cameras'}))}")
    if not isinstance(doc["cameras"], list):
        raise ConfigError(f"{path}: cameras: must be a list, got {doc['cameras']!r}")
    base = base_cfg if base_cfg is not None else get_pipeline_defaults()
    entries: list[CameraEntry] = []
    for i, raw in enumerate(doc["cameras"]):
        entry = _parse_entry(raw, path, i)
        if any(e.id == entry.id for e in entries):
            raise ConfigError(f"{path}: camera #{i + 1}: id: '{entry.id}' is used twice")
        cfg = camera_config(base, entry, path)
        try:
            if check is not None:
                check(cfg)
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"{path}: camera '{entry.id}': overrides: {exc}") from exc
        entries.append(entry)
    return entries


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read camera file {path}: {exc}") from exc


def load_camera_file(
    path: str | Path, base_cfg: CfgNode | None = None, check: Callable[[CfgNode], None] | None = None
) -> list[CameraEntry]:
    """Parse and validate the whole file. ``base_cfg`` (default: the pipeline defaults) types the
    overrides; ``check(camera_cfg)`` may refuse a camera's config with ConfigError/ValueError
    (e.g. run_pipeline's check_privacy and check_sources), so that a reload is refused as a whole."""
    return _parse_text(_read_text(Path(path)), Path(path), base_cfg, check)


def zones_to_boxes(zones: tuple[Zone, ...] | list[Zone], width: int, height: int) -> list[Zone]:
    """Pixel boxes inside the frame; a zone with all values <= 1 is in fractions of the frame, so one
    file fits cameras of any resolution. Zones wholly outside the frame mask nothing and are dropped."""
    boxes: list[Zone] = []
    for zone in zones:
        x1, y1, x2, y2 = zone
        if max(zone) <= 1.0:
            x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
        y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
        if x2 > x1 and y2 > y1:
            boxes.append((x1, y1, x2, y2))
    return boxes


class CameraFileWatcher:
    """Reloads the camera file when its content changes or on SIGHUP. A file that becomes invalid
    (a half-saved edit) keeps the running list, because stopping cameras over a typo would be worse
    than running the old list a little longer; its error is logged once, and the next change is tried."""

    def __init__(
        self,
        path: str | Path,
        poll_s: float = 1.0,
        *,
        base_cfg: CfgNode | None = None,
        check: Callable[[CfgNode], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.poll_s = float(poll_s)
        self._base_cfg, self._check = base_cfg, check
        self._lock = threading.Lock()
        self._reload = threading.Event()
        self._last_poll = time.monotonic()
        self._stat, self._racy = self._stat_key(), True
        text = _read_text(self.path)
        self._cameras = _parse_text(text, self.path, base_cfg, check)  # refused at start: raises
        self._digest = hashlib.sha256(text.encode()).hexdigest()
        self._failed: str | None = None  # digest (or error text) of the last refused content

    @property
    def cameras(self) -> list[CameraEntry]:
        return list(self._cameras)

    def _stat_key(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def request_reload(self) -> None:
        """Safe from a signal handler or any thread: the next poll() re-reads the file."""
        self._reload.set()

    def install_sighup(self) -> bool:
        """SIGHUP = reload now (the daemon convention). Signal handlers can only be set from the main
        thread; elsewhere (or without SIGHUP) nothing happens and False is returned."""
        if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())
        return True

    def poll(self) -> CameraChanges | None:
        """The changes since the last good load, or None (nothing changed, too soon, or invalid)."""
        with self._lock:
            forced = self._reload.is_set()
            now = time.monotonic()
            if not forced and now - self._last_poll < self.poll_s:
                return None
            self._last_poll = now
            self._reload.clear()
            key = self._stat_key()
            # 'racy': written within the timestamp granularity of our last read, so a second edit
            # could keep mtime and size: hash again until the file is older than that
            if not forced and key == self._stat and not self._racy:
                return None
            self._stat = key
            self._racy = key is not None and time.time_ns() - key[0] < 2_000_000_000
            try:
                text = _read_text(self.path)
            except ConfigError as exc:
                self._refuse(str(exc), str(exc), forced)
                return None
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest == self._digest:
                self._failed = None  # back to the running content: a later bad edit is reported again
            if not forced and digest in (self._digest, self._failed):
                return None
            try:
                cameras = _parse_text(text, self.path, self._base_cfg, self._check)
            except ConfigError as exc:
                self._refuse(str(exc), digest, forced)
                return None
            self._digest, self._failed = digest, None
            return self._diff(cameras)

    def _refuse(self, message: str, marker: str, forced: bool) -> None:
        if forced or marker != self._failed:
            log.error("camera file not reloaded, keeping the %d running camera(s): %s", len(self._cameras), message)
        self._failed = marker

    def _diff(self, cameras: list[CameraEntry]) -> CameraChanges | None:
        old = {c.id: c for c in self._cameras}
        new = {c.id: c for c in cameras}
        changes = CameraChanges(
            added=tuple(c for c in cameras if c.id not in old),
            removed=tuple(c for c in self._cameras if c.id not in new),
            changed=tuple(c for c in cameras if c.id in old and old[c.id] != c),
            cameras=tuple(cameras),
        )
        self._cameras = cameras
        if not changes:
            return None
        log.info(
            "camera file %s reloaded: added %s, removed %s, changed %s",
            self.path,
            [c.id for c in changes.added],
            [c.id for c in changes.removed],
            [c.id for c in changes.changed],
        )
        return changes
