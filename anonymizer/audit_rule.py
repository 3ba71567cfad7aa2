"""The audit's comparison rule: when one person box of the anonymized video counts as leaked.

Kept apart from the audit's video walk (``anonymizer.audit``) and its report
(``anonymizer.audit_report``): the rule is what a reader of ``audit.json`` must be able to check by
hand, and it changes only when the measurements of ``docs/audit.md`` say so, not when the reading of
videos or the layout of the report does. The measures themselves are shared with the pipeline's
privacy floor (``anonymizer.privacy_floor.region_measures``), so the two judge a region alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anonymizer.audit_persons import AuditInputError, Person
from anonymizer.privacy_floor import MIN_HEIGHT, region_measures
from anonymizer.privacy_floor import SIZE_WH as SSIM_SIZE_WH


@dataclass(frozen=True)
class AuditRule:
    """When a person box counts as leaked; the thresholds and why: ``anonymizer.audit``'s docstring
    and ``docs/audit.md``."""

    ssim_max: float = 0.75
    min_changed: float = 0.12
    change_level: int = 12
    min_box_height: int = MIN_HEIGHT
    background_margin: float = 0.10

    def validate(self) -> None:
        """Refuse thresholds under which nothing (or everything) could be a leak; NaN fails every test."""
        checks = [
            ("ssim_max", 0.0 < self.ssim_max <= 1.0, "in (0, 1]"),
            ("min_changed", 0.0 <= self.min_changed <= 1.0, "in [0, 1]"),
            ("change_level", 0 <= self.change_level < 255, "in [0, 255)"),
            ("min_box_height", self.min_box_height >= 1, ">= 1"),
            ("background_margin", self.background_margin >= 0.0, ">= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise AuditInputError(f"{name} must be {expected}, got {getattr(self, name)}")

    def describe(self) -> str:
        return (
            f"a person box (clipped to the frame, at least {self.min_box_height} px high) is leaked when "
            f"the grey SSIM of its raw and anonymized regions (both resized to {SSIM_SIZE_WH[0]}x"
            f"{SSIM_SIZE_WH[1]}) exceeds {self.ssim_max:g}, or when fewer than {self.min_changed:.0%} of "
            f"the pixels of its least-changed half (top, bottom, left or right) differ by more than "
            f"{self.change_level} grey levels"
        )


@dataclass
class BoxResult:
    """The verdict on one audited box (kept for misses only)."""

    frame: int
    box: list[int]
    ssim: float | None
    changed: float | None
    changed_weakest_half: float | None
    leaked: bool
    reasons: list[str]
    id: int | None = None
    score: float | None = None


def finite(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded, or None when it is missing or not finite (``audit.json`` is standard JSON)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def clip_box(box: Sequence[float], width: int, height: int) -> list[int]:
    """Integer pixel box covering ``box`` (floor/ceil), clipped to the frame."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [
        max(0, min(width, math.floor(x1))),
        max(0, min(height, math.floor(y1))),
        max(0, min(width, math.ceil(x2))),
        max(0, min(height, math.ceil(y2))),
    ]


def grow_box(box: Sequence[float], margin: float, width: int, height: int) -> list[int]:
    """``box`` grown by ``margin`` of its width/height on each side, as the pipeline grows its masks."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return clip_box((x1 - dx, y1 - dy, x2 + dx, y2 + dy), width, height)


def compare_region(
    raw_grey: np.ndarray, out_grey: np.ndarray, box: Sequence[int], rule: AuditRule
) -> tuple[float, float, float]:
    """(ssim, changed, changed_weakest_half) of one clipped box; grey uint8 frames of equal size."""
    x1, y1, x2, y2 = box
    return region_measures(raw_grey[y1:y2, x1:x2], out_grey[y1:y2, x1:x2], rule.change_level)


def background_changed(diff_mask: np.ndarray, persons: Sequence[Person], rule: AuditRule) -> float | None:
    """Share of the pixels outside every person box (grown by the margin) that changed; None if none are."""
    h, w = diff_mask.shape
    outside = np.ones((h, w), bool)
    for p in persons:
        x1, y1, x2, y2 = grow_box(p.box, rule.background_margin, w, h)
        outside[y1:y2, x1:x2] = False
    n = int(outside.sum())
    return float(diff_mask[outside].sum()) / n if n else None


def judge(
    index: int, box: list[int], person: Person, measures: tuple[float, float, float], rule: AuditRule
) -> BoxResult:
    """The verdict on one box of frame ``index`` from its three measures, with the reasons of a leak."""
    ssim, changed, weakest = measures
    reasons = []
    if ssim > rule.ssim_max:
        reasons.append(f"ssim {ssim:.3f} > {rule.ssim_max:g}")
    if weakest < rule.min_changed:
        reasons.append(f"weakest half changed {weakest:.3f} < {rule.min_changed:g}")
    return BoxResult(
        index,
        box,
        finite(ssim),
        finite(changed),
        finite(weakest),
        bool(reasons),
        reasons,
        person.id,
        finite(person.score),
    )
