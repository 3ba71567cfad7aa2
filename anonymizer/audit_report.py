"""The audit's report: running totals, ``audit.json``, the operator's verdict and the misses' sheet.

Kept apart from the video walk (``anonymizer.audit``) and the rule (``anonymizer.audit_rule``): the
report is the audit's interface to people and scripts (``audit.json`` keys, the one-paragraph
verdict), and it may only show what the anonymized video shows: the contact sheet is cut from the
output's pixels, never from the raw video.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anonymizer.audit_persons import PERSON_LIKE_CLASSES, GroundTruth
from anonymizer.audit_rule import SSIM_SIZE_WH, AuditRule, BoxResult, finite
from anonymizer.audit_scene import EmptyScene
from detectors.base import Detector

log = logging.getLogger("anonymizer.audit")

MAX_TILES = 64


@dataclass
class Tally:
    """Running totals of one audit (kept small: misses are the only per-box records)."""

    audited: int = 0
    protected: int = 0
    too_small: int = 0
    misses: list[BoxResult] = field(default_factory=list)
    tiles: list[tuple[np.ndarray, str]] = field(default_factory=list)
    background: list[float] = field(default_factory=list)
    ssim_sum: float = 0.0
    changed_min: float = 1.0


def persons_description(persons_source: Detector | GroundTruth) -> dict[str, Any]:
    """Where the audited persons came from, as ``audit.json`` records it."""
    if isinstance(persons_source, GroundTruth):
        return {
            "kind": "ground_truth",
            "path": persons_source.path,
            "classes": list(persons_source.classes),
            "min_visibility": persons_source.min_visibility,
            "person_area_classes": list(PERSON_LIKE_CLASSES),
        }
    conf = getattr(persons_source, "conf", None)
    return {"kind": "detector", "name": persons_source.name, "conf": None if conf is None else float(conf)}


def build_report(
    raw: str | Path,
    anonymized: str | Path,
    persons_source: Detector | GroundTruth,
    rule: AuditRule,
    size: tuple[int, int],
    counts: dict[str, Any],
    compared: int,
    tally: Tally,
    seconds: float,
    scene: EmptyScene | None = None,
) -> dict[str, Any]:
    """The ``audit.json`` dict of one finished audit (every number finite or None)."""
    frames_raw, frames_out = counts["raw"]["decoded"], counts["anonymized"]["decoded"]
    warnings_ = []
    if not counts["stopped_at_max_frames"] and frames_raw != frames_out:
        warnings_.append(
            f"frame counts differ: raw {frames_raw}, anonymized {frames_out}; the first {compared} frames were compared"
        )
    warnings_ += [f"{k}: {v['error']}" for k, v in counts.items() if isinstance(v, dict) and v["error"]]
    for w in warnings_:
        log.warning("%s", w)
    bg = tally.background
    return {
        "verdict": "pass" if not tally.misses else "fail",
        "coverage": finite(tally.protected / tally.audited) if tally.audited else None,
        "audited": tally.audited,
        "protected": tally.protected,
        "missed": len(tally.misses),
        "too_small": tally.too_small,
        "background_changed_mean": finite(float(np.mean(bg))) if bg else None,
        "background_changed_max": finite(float(np.max(bg))) if bg else None,
        "mean_ssim": finite(tally.ssim_sum / tally.audited) if tally.audited else None,
        "lowest_weakest_half_changed": finite(tally.changed_min) if tally.audited else None,
        "frames_compared": compared,
        "frames_raw": frames_raw,
        "frames_anonymized": frames_out,
        "stopped_at_max_frames": counts["stopped_at_max_frames"],
        "warnings": warnings_,
        "rule": {**asdict(rule), "ssim_size_wh": list(SSIM_SIZE_WH), "text": rule.describe()},
        "inputs": {
            "raw": str(raw),
            "anonymized": str(anonymized),
            "width": size[0],
            "height": size[1],
            "persons": persons_description(persons_source),
        },
        "empty_scene": None if scene is None else scene.describe(),
        "timing": {"seconds": finite(seconds, 3), "fps": finite(compared / seconds, 2) if seconds > 0 else None},
        "misses": [asdict(m) for m in tally.misses],
    }


def verdict_text(report: dict[str, Any]) -> str:
    """One paragraph an operator can read: the outcome, the numbers behind it and the rule."""
    n, missed = report["audited"], report["missed"]
    cov = "n/a" if report["coverage"] is None else f"{report['coverage']:.1%}"
    head = "PASS" if not missed else "FAIL"
    first = ""
    if missed:
        m = report["misses"][0]
        first = f" (first at frame {m['frame']}, box {m['box']}: {'; '.join(m['reasons'])})"
    bg = report["background_changed_mean"]
    bg_text = "n/a" if bg is None else f"{bg:.2%} (max {report['background_changed_max']:.2%})"
    src = report["inputs"]["persons"]
    who = (
        f"detector {src['name']} at conf {src['conf']}" if src["kind"] == "detector" else f"ground truth {src['path']}"
    )
    text = (
        f"{head}: {report['protected']} of {n} audited persons protected (coverage {cov}), {missed} leaked"
        f"{first}, over {report['frames_compared']} frames; {report['too_small']} persons below "
        f"{report['rule']['min_box_height']} px not audited. Outside person boxes {bg_text} of the frame "
        f"changed. Persons from {who}. Rule: {report['rule']['text']}."
    )
    scene = report.get("empty_scene")
    if scene:
        text += (
            f" Judged against the reviewed empty scene {scene['path']} (frame {scene['empty_frame']}): "
            f"{scene['narrowed']} boxes narrowed to what differs from it, {scene['set_aside']} detections of "
            f"nothing but the scene set aside ({scene['set_aside_would_leak']} of them would count as leaked), "
            f"{scene['frames_without_scene']} frames audited without it."
        )
    if report["warnings"]:
        text += " Warnings: " + "; ".join(report["warnings"]) + "."
    return text


def contact_sheet(
    tiles: Sequence[tuple[np.ndarray, str]], tile_wh: tuple[int, int] = (112, 192), columns: int = 8
) -> np.ndarray:
    """Grid of anonymized-output regions, each labelled with its frame and box (two lines under it)."""
    tw, th = tile_wh
    label_h = 30
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * (th + label_h), min(columns, len(tiles)) * tw, 3), 255, np.uint8)
    for k, (crop, label) in enumerate(tiles):
        r, c = divmod(k, columns)
        y, x = r * (th + label_h), c * tw
        sheet[y : y + th, x : x + tw] = cv2.resize(crop, (tw, th), interpolation=cv2.INTER_NEAREST)
        for line_no, text in enumerate(label.split(" ", 1)):
            cv2.putText(
                sheet,
                text,
                (x + 3, y + th + 12 + 13 * line_no),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.38,
                (0, 0, 200),
                1,
                cv2.LINE_AA,
            )
    return sheet


def write_outputs(report: dict[str, Any], tiles: Sequence[tuple[np.ndarray, str]], out_dir: Path) -> None:
    """``audit.json`` (NaN/Infinity refused) and, with misses, ``misses.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    sheet_path = out_dir / "misses.png"
    if tiles:
        cv2.imwrite(str(sheet_path), contact_sheet(tiles))
    elif sheet_path.exists():
        sheet_path.unlink()  # a stale sheet of an earlier audit would contradict this audit.json
