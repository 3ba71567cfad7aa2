"""Records of the observations log that carry no region, and what a log's records count for.

Reconnect gaps of live cameras are ``{"kind": "gap", ...}`` records (:func:`gap_records`); a frame's
records get the output frame their picture landed on (:func:`placed_records`); the summary's counts
follow the log (:func:`tally_records`), also after a log was cut to what the video holds
(:func:`cut_segment_observations` for segmented output, :func:`stream.jsonlog.truncate_jsonl_after`
for one file). See :mod:`stream.segments` for the segment records.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def gap_records(
    gaps: Sequence[dict[str, int]], noted: int, frame_index: int, timestamp_ms: int
) -> tuple[list[dict[str, Any]], int]:
    """Records for a live source's reconnect gaps that end before source frame ``frame_index`` (the
    first frame written after them), and the new count of gaps noted. They go into the log with that
    frame's placement: ``output_frame`` is where the video resumes."""
    records = []
    while noted < len(gaps) and gaps[noted].get("after_frame", 0) <= frame_index:
        gap = gaps[noted]
        records.append(
            {
                "kind": "gap",
                "frame_index": frame_index,
                "timestamp_ms": timestamp_ms,
                "after_frame": gap.get("after_frame"),
                "lost_at_ms": gap.get("lost_at_ms"),
                "back_at_ms": gap.get("back_at_ms"),
            }
        )
        noted += 1
    return records, noted


def placed_records(
    records: list[dict[str, Any]],
    output_frame: int | None,
    repeats: int,
    segment: str | None = None,
    continued: bool = False,
) -> list[dict[str, Any]]:
    """One frame's records as the log holds them: with the output frame their picture landed on (and
    its segment). A gap is noted once, where the video resumes; a continued picture repeats no gap."""
    extra: dict[str, Any] = {"output_frame": output_frame, "output_repeats": repeats}
    if segment is not None:
        extra["segment"] = segment
    if continued:
        extra["continued"] = True
    return [
        r | extra | ({"output_repeats": 0} if r.get("kind") == "gap" else {})
        for r in records
        if not (continued and r.get("kind") == "gap")
    ]


TALLIED = (
    "person_observations",
    "anonymized_observations",
    "held_masks",
    "low_score_masks",
    "motion_masks",
    "lookahead_masks",
)  # the summary counts an observations log can be tallied for
_KIND_COUNT = {
    "held": "held_masks",
    "low_score": "low_score_masks",
    "motion": "motion_masks",
    "lookahead": "lookahead_masks",
}


def tally_records(records: Sequence[dict[str, Any]]) -> Counter:
    """The summary's counts of these log records (a ``continued`` record is its picture's once more: not
    counted again; gaps and segment starts count for nothing)."""
    counts: Counter = Counter()
    for record in records:
        if record.get("continued"):
            continue
        kind = record.get("kind")
        if kind == "person" and not record.get("held"):
            counts["person_observations"] += 1
            counts["anonymized_observations"] += bool(record.get("protected"))
        elif kind in _KIND_COUNT:
            counts[_KIND_COUNT[kind]] += 1
    return counts


def cut_segment_observations(path: Path, limits: dict[str, int]) -> list[dict[str, Any]]:
    """Remove from a segmented observations log the records that claim output frames beyond what their
    segment's file holds (``limits``: segment name → its last output frame), and a torn last line;
    returns the records removed. The log is rewritten through a temp file, then renamed."""
    removed: list[dict[str, Any]] = []
    path = Path(path)
    if not path.is_file():
        return removed
    tmp = path.with_name(path.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for line in src:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # torn by the failure: not a record
            last = limits.get(str(record.get("segment"))) if isinstance(record, dict) else None
            frame = record.get("output_frame") if isinstance(record, dict) else None
            if last is not None and frame is not None and int(frame) > last:
                removed.append(record)
                continue
            dst.write(line if line.endswith(b"\n") else line + b"\n")
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    return removed
