"""Where the audit's persons come from: ground truth (MOT format) or an independent detector.

Kept apart from the audit itself: the persons are the audit's reference, and their sources (files
with their own quirks, detectors built like the pipeline's) change for other reasons than the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectors.base import Detector

PERSON_LIKE_CLASSES = (1, 2, 7, 8, 12)  # MOT17: pedestrian, on vehicle, static person, distractor, reflection


class AuditInputError(ValueError):
    """The audit cannot run on these inputs (missing/undecodable file, size mismatch, bad option)."""


@dataclass
class Person:
    """One person of one raw frame. ``audited=False``: only counts as person area (background measure)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    id: int | None = None
    score: float | None = None
    audited: bool = True


@dataclass
class GroundTruth:
    """Persons per raw frame index (0-based), read from a MOT-format file by :func:`read_mot_gt`."""

    frames: dict[int, list[Person]]
    path: str = ""
    classes: tuple[int, ...] = (1, 2, 7)
    min_visibility: float = 0.5

    def persons(self, index: int) -> list[Person]:
        return self.frames.get(index, [])


def read_mot_gt(path: str | Path, classes: Sequence[int] = (1, 2, 7), min_visibility: float = 0.5) -> GroundTruth:
    """MOT ground truth ``frame, id, left, top, width, height, consider, class, visibility`` (frame 1-based).

    ``consider`` is ignored on purpose: MOT marks static people and reflections 0 for tracking
    benchmarks, but they are still people whose faces the video shows. Rows of the given ``classes``
    with ``visibility >= min_visibility`` are audited; every person-like row (classes 1, 2, 7, 8, 12,
    any visibility) counts as person area for the background measure. Files with only 6-7 columns
    (no class/visibility) are read as visible pedestrians.
    """
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"ground-truth file not found: {path}")
    wanted = {int(c) for c in classes}
    frames: dict[int, list[Person]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        person = _parse_mot_row(line, lineno, path, wanted, min_visibility)
        if person is not None:
            frames.setdefault(person[0], []).append(person[1])
    return GroundTruth(frames, str(path), tuple(sorted(wanted)), float(min_visibility))


def _parse_mot_row(
    line: str, lineno: int, path: Path, wanted: set[int], min_visibility: float
) -> tuple[int, Person] | None:
    try:
        values = [float(v) for v in line.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise AuditInputError(f"{path}:{lineno}: not a MOT row (numbers separated by commas): {line!r}") from None
    if len(values) < 6:
        raise AuditInputError(f"{path}:{lineno}: a MOT row needs at least frame,id,left,top,width,height: {line!r}")
    frame, pid, left, top, width, height = values[:6]
    cls = int(values[7]) if len(values) >= 9 else 1
    vis = values[8] if len(values) >= 9 else 1.0
    if frame < 1 or (cls not in PERSON_LIKE_CLASSES and cls not in wanted):
        return None
    audited = cls in wanted and vis >= min_visibility
    return int(frame) - 1, Person((left, top, left + width, top + height), int(pid), None, audited)


def build_audit_detector(spec: str, conf: float) -> Detector:
    """The independent detector of ``--detector``, built by the pipeline's factory (an Ultralytics
    model, an OpenVINO SSD ``.xml``, 'hog'), reporting boxes from ``conf`` up."""
    from configs import build_config
    from configs.pipeline_defaults import get_pipeline_defaults
    from detectors.factory import DetectorError, build_detector

    if spec not in ("hog", "auto") and not Path(spec).expanduser().exists():
        raise AuditInputError(f"detector model not found: {spec}")
    # whole frames, as the model was made to run: the audit measures the pipeline, not a better detector
    cfg = build_config(
        get_pipeline_defaults(),
        None,
        ["DETECTOR.CONF", repr(float(conf)), "DETECTOR.TILES", "off", "DETECTOR.MASK_CONF", repr(float(conf))],
    )
    try:
        return build_detector(spec, cfg.DETECTOR)
    except DetectorError as exc:
        raise AuditInputError(str(exc)) from exc
