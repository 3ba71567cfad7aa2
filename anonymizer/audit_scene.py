"""A reviewed empty scene for the audit: judge each person on what differs from it.

An independent detector is the audit's reference, and on a static camera it makes two kinds of box
the audit cannot judge fairly. Some are static false positives (a pillar, a dark window, a sign
post): they count as a miss on every frame, because the pipeline rightly leaves a pillar alone.
Others hold a person and as much furniture again (a seated or half-hidden person whose box also
takes in the table): the person is protected, the table is not, and the box's untouched half fails
the rule. Both are the reference's errors, not the output's.

The pixels of a box that equal the empty scene carry no information about anybody. So when a
person reviewed the raw video and names a frame of it on which nobody is in view, or attests that
the per-pixel median of the video shows nobody, the audit judges each detection on the *new
content* of its box: the raw pixels more than ``NEW_LEVEL`` grey levels from the empty scene,
opened with a 5×5 kernel to drop codec noise; their bounding box, grown by the audit's person margin
(``AuditRule.background_margin``, 10 % per side) and kept inside the detector's box, is audited by
the usual rule.
A detection with no new content (under ``NEW_MIN_SHARE`` of its box) holds nothing but the empty
scene: it is set aside, counted in ``audit.json`` (``empty_scene``) with how many of them the rule
would have called leaked, and named in the verdict.

Guards, so that a review cannot hide a person:

* the new-content box lies inside the detector's box, so the scene never makes a box larger than
  the detector's, and a person who was not in the empty scene is judged on all of their pixels;
* a frame on which more than ``MAX_CHANGED_SHARE`` of the pixels differ from the scene (the camera
  moved, the lights changed) is audited without it, and counted;
* the file names the raw video it was reviewed for; another video is refused.

It is a reviewed statement about the raw video, kept next to the evidence, one YAML file per
video (``configs/audit_scenes/``)::

    video: one-by-one-person-detection.mp4   # the raw file's name
    empty_frame: 0                           # a 0-based frame with nobody in view, or 'median'
    reviewed: who looked, when, at what
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from anonymizer.audit_persons import AuditInputError
from anonymizer.audit_rule import grow_box

NEW_LEVEL = 25
NEW_MIN_SHARE = 0.02
MAX_CHANGED_SHARE = 0.5
MEDIAN_FRAMES = 150
_OPEN = np.ones((5, 5), np.uint8)


def new_content(raw_grey: np.ndarray, scene: np.ndarray) -> np.ndarray:
    """Mask (uint8 0/1) of the raw pixels that differ from the empty scene, codec noise opened away."""
    return cv2.morphologyEx((cv2.absdiff(raw_grey, scene) > NEW_LEVEL).astype(np.uint8), cv2.MORPH_OPEN, _OPEN)


def new_content_box(new: np.ndarray, box: Sequence[int], margin: float) -> list[int] | None:
    """Bounding box (frame pixels) of the new content inside ``box``, grown by ``margin`` of its size
    per side and kept inside ``box``; None when there is (almost) no new content.

    The new-content mask is a lower bound of a person's extent (their pixels within ``NEW_LEVEL`` of
    the background are not new), so its box is grown by the audit's person margin.
    """
    x1, y1, x2, y2 = box
    part = new[y1:y2, x1:x2]
    if part.size == 0 or part.mean() < NEW_MIN_SHARE:
        return None
    ys, xs = np.nonzero(part)
    found = (x1 + int(xs.min()), y1 + int(ys.min()), x1 + int(xs.max()) + 1, y1 + int(ys.max()) + 1)
    gx1, gy1, gx2, gy2 = grow_box(found, margin, new.shape[1], new.shape[0])
    return [max(x1, gx1), max(y1, gy1), min(x2, gx2), min(y2, gy2)]


@dataclass
class EmptyScene:
    """A reviewed empty scene of one raw video (:func:`read_empty_scene`)."""

    path: str
    video: str
    empty_frame: int | str
    reviewed: str
    scene: np.ndarray | None = field(default=None, repr=False)  # grey, the raw frame size
    set_aside: int = 0
    would_leak: int = 0
    narrowed: int = 0
    frames_without: int = 0

    def fresh(self) -> EmptyScene:
        """The same review and scene with zeroed counts, for another audit of the same raw video."""
        return EmptyScene(self.path, self.video, self.empty_frame, self.reviewed, self.scene)

    def set_scene(self, frames: Iterable[tuple[int, np.ndarray]], frame_count: int | None) -> None:
        """Build the grey empty scene from the raw video's frames ((index, BGR image) from frame 0)."""
        if isinstance(self.empty_frame, int):
            for index, image in frames:
                if index == self.empty_frame:
                    self.scene = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                    return
            raise AuditInputError(f"{self.path}: empty_frame {self.empty_frame} is not in the raw video")
        # every step-th frame; where the length is unknown, the step doubles (keeping every other frame
        # picked so far) whenever twice MEDIAN_FRAMES are held, so memory stays bounded on any length
        step = max(1, (frame_count or MEDIAN_FRAMES) // MEDIAN_FRAMES)
        picked: list[np.ndarray] = []
        for i, img in frames:
            if i % step:
                continue
            picked.append(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
            if len(picked) >= 2 * MEDIAN_FRAMES:
                picked, step = picked[::2], step * 2
        if len(picked) < 3:
            raise AuditInputError(
                f"{self.path}: a median scene needs at least 3 frames, the raw video gave {len(picked)}"
            )
        self.scene = np.median(np.stack(picked), axis=0).astype(np.uint8)

    def frame_mask(self, raw_grey: np.ndarray) -> np.ndarray | None:
        """The new-content mask of one raw frame, or None when the scene does not apply to it."""
        if self.scene is None:
            raise AuditInputError(f"{self.path}: the empty scene was not built before the audit")
        if self.scene.shape != raw_grey.shape:
            raise AuditInputError(f"{self.path}: the empty scene is {self.scene.shape}, the raw frame {raw_grey.shape}")
        new = new_content(raw_grey, self.scene)
        if new.mean() > MAX_CHANGED_SHARE:
            self.frames_without += 1
            return None
        return new

    def describe(self) -> dict[str, Any]:
        """The ``empty_scene`` section of ``audit.json``."""
        return {
            "path": self.path,
            "video": self.video,
            "empty_frame": self.empty_frame,
            "reviewed": self.reviewed,
            "rule": (
                f"each detection is judged on the bounding box of its raw pixels more than {NEW_LEVEL} grey levels "
                f"from the reviewed empty scene (5x5 opening), grown by the person margin inside the detector's box; "
                f"one with less than {NEW_MIN_SHARE:.0%} such pixels is "
                f"set aside; frames with more than {MAX_CHANGED_SHARE:.0%} of their pixels new are audited without "
                "the scene"
            ),
            "set_aside": self.set_aside,
            "set_aside_would_leak": self.would_leak,
            "narrowed": self.narrowed,
            "frames_without_scene": self.frames_without,
        }


def read_empty_scene(path: str | Path, raw: str | Path) -> EmptyScene:
    """Parse and check a reviewed empty scene for the raw video ``raw``; AuditInputError on any flaw."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AuditInputError(f"cannot read empty-scene review {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise AuditInputError(f"{path}: expected a mapping with video, empty_frame and reviewed")
    unknown = set(data) - {"video", "empty_frame", "reviewed"}
    if unknown:
        raise AuditInputError(f"{path}: unknown keys {sorted(unknown)} (known: video, empty_frame, reviewed)")
    video = data.get("video")
    if not isinstance(video, str) or not video:
        raise AuditInputError(f"{path}: 'video' must name the raw file that was reviewed")
    if Path(raw).name != video:
        raise AuditInputError(f"{path} was reviewed for {video}, not for {Path(raw).name}")
    frame = data.get("empty_frame")
    if not (frame == "median" or (isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0)):
        raise AuditInputError(f"{path}: empty_frame must be a frame index (>= 0) or 'median', got {frame!r}")
    reviewed = data.get("reviewed")
    if not isinstance(reviewed, str) or not reviewed.strip():
        raise AuditInputError(f"{path}: 'reviewed' must say who looked at the raw video, when, and at what")
    return EmptyScene(str(path), video, frame, reviewed.strip())
