"""Privacy audit: did the anonymized video replace every person of the raw video?

    python -m anonymizer.audit --raw vtest.avi --anonymized out/vtest.mp4 \\
        --detector data/detector_models/intel/pedestrian-detection-adas-0002/FP16/
    python -m anonymizer.audit --raw MOT17-09/img1 --anonymized out/img1.mp4 --gt MOT17-09/gt/gt.txt

The persons of the raw video come from ground truth (``--gt``, MOT format) or from an *independent*
detector run on the raw frames (``--detector``; the recommended one is Intel's OpenVINO SSD
``pedestrian-detection-adas-0002``, which shares nothing with the pipeline's YOLO, so the audit does
not inherit the pipeline's blind spots). Frame ``i`` of the raw video is compared with frame ``i`` of
the anonymized one, both decoded exactly as the pipeline decodes (``stream.sources.open_source``).

The rule (printed and written to ``audit.json``)
-------------------------------------------------
Each audited person box, clipped to the frame, is compared with the same region of the output in
grey levels:

* ``ssim``: SSIM (``anonymizer.image_metrics.ssim_uint8``) of the two regions, both resized to
  64×128 (W×H, ``cv2.INTER_AREA``);
* ``changed``: the share of the box's pixels whose grey level differs by more than ``change_level``
  (default 12); ``changed_weakest_half``: the same share in the *least changed* of the box's four
  halves (top, bottom, left, right).

A box is **leaked** when ``ssim > ssim_max`` (default 0.75) or ``changed_weakest_half < min_changed``
(default 0.12). Persons whose visible box is lower than ``min_box_height`` (16 px) are not audited
(nothing identifying survives at that size, and SSIM on a few pixels is noise) but are counted as
``too_small``.

Why these numbers: the measurements that chose them are in ``docs/audit.md``.

Besides misses, the audit reports coverage (protected / audited), ``too_small``, and the share of
the frame changed *outside* person boxes (each grown by 10 % per side; mean and maximum over
frames): over-masking costs utility and shows up there.

Outputs: ``DIR/audit.json`` (standard JSON) and, when there are misses, ``DIR/misses.png``, a contact
sheet of the anonymized output's regions of up to 64 misses (what the output shows, i.e. the leak
itself; raw-video pixels are never written). ``DIR`` is ``--out``, by default
``<anonymized folder>/<anonymized stem>.audit/`` (one folder per camera, so audits of several cameras
of one output folder do not overwrite each other).

Exit status: 0 no miss, 1 at least one miss, 2 bad input (missing or undecodable file, size mismatch,
bad arguments), with ``error: ...`` on stderr.

Layout: this module walks the two videos frame by frame and is the command line; the rule lives in
``anonymizer.audit_rule``, the report (``audit.json``, verdict, contact sheet) in
``anonymizer.audit_report``, the persons' sources in ``anonymizer.audit_persons``. Every name is
importable from here as before.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from anonymizer.audit_persons import (
    PERSON_LIKE_CLASSES,
    AuditInputError,
    GroundTruth,
    Person,
    build_audit_detector,
    read_mot_gt,
)
from anonymizer.audit_report import (
    MAX_TILES,
    Tally,
    build_report,
    contact_sheet,
    persons_description,
    verdict_text,
    write_outputs,
)
from anonymizer.audit_rule import (
    SSIM_SIZE_WH,
    AuditRule,
    BoxResult,
    background_changed,
    clip_box,
    compare_region,
    finite,
    grow_box,
    judge,
)
from anonymizer.audit_scene import EmptyScene, new_content_box, read_empty_scene
from detectors.base import Detector

__all__ = [
    "DETECT_CHUNK",
    "MAX_TILES",
    "PERSON_LIKE_CLASSES",
    "SSIM_SIZE_WH",
    "AuditInputError",
    "AuditRule",
    "BoxResult",
    "GroundTruth",
    "EmptyScene",
    "Person",
    "PersonsSource",
    "audit",
    "background_changed",
    "build_audit_detector",
    "build_empty_scene",
    "build_report",
    "clip_box",
    "compare_region",
    "contact_sheet",
    "finite",
    "grow_box",
    "judge",
    "main",
    "parse_args",
    "persons_description",
    "read_empty_scene",
    "read_mot_gt",
    "verdict_text",
    "write_outputs",
]

log = logging.getLogger("anonymizer.audit")

DETECT_CHUNK = 8

PersonsSource = Detector | GroundTruth | Mapping[int, Sequence[Person]]


# ------------------------------------------------------------------------------------------ inputs
def _open(spec: str | Path, camera_id: str):
    """Open ``spec`` exactly as the pipeline does; live cameras are refused (an audit needs a recording)."""
    from configs.pipeline_defaults import get_pipeline_defaults
    from stream.sources import SourceError, is_live_spec, open_source

    spec = str(spec)
    if is_live_spec(spec):
        raise AuditInputError(f"{camera_id} must be a video file or an image folder, not a live source: {spec}")
    try:
        return open_source(spec, camera_id, get_pipeline_defaults().SOURCE)
    except SourceError as exc:
        raise AuditInputError(str(exc)) from exc


def _frames(source, stats: dict[str, Any]) -> Iterator[np.ndarray]:
    """Frames of ``source``; a decoding error mid-stream ends the stream (and is reported), not the audit."""
    from stream.sources import SourceError

    try:
        for frame in source.frames():
            stats["decoded"] += 1
            yield frame.image
    except SourceError as exc:
        stats["error"] = str(exc)
        log.warning("%s", exc)


# ------------------------------------------------------------------------------------------ the audit
def _audit_frame(
    index: int,
    raw: np.ndarray,
    out: np.ndarray,
    persons: Sequence[Person],
    rule: AuditRule,
    tally: Tally,
    scene: EmptyScene | None = None,
) -> None:
    raw_grey = cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
    out_grey = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    h, w = raw_grey.shape
    new = scene.frame_mask(raw_grey) if scene is not None else None
    for person in persons:
        if not person.audited:
            continue
        box = clip_box(person.box, w, h)
        if new is not None:  # judged on what differs from the reviewed empty scene
            assert scene is not None
            narrowed = new_content_box(new, box, rule.background_margin)
            if narrowed is None:  # nothing but the empty scene: counted apart, never silently
                scene.set_aside += 1
                scene.would_leak += judge(
                    index, box, person, compare_region(raw_grey, out_grey, box, rule), rule
                ).leaked
                continue
            scene.narrowed += narrowed != box
            box = narrowed
        _audit_box(index, person, box, raw_grey, out_grey, out, rule, tally)
    bg = background_changed(cv2.absdiff(raw_grey, out_grey) > rule.change_level, persons, rule)
    if bg is not None:
        tally.background.append(bg)


def _audit_box(
    index: int,
    person: Person,
    box: list[int],
    raw_grey: np.ndarray,
    out_grey: np.ndarray,
    out: np.ndarray,
    rule: AuditRule,
    tally: Tally,
) -> None:
    if box[3] - box[1] < rule.min_box_height or box[2] - box[0] < 2:
        tally.too_small += 1
        return
    result = judge(index, box, person, compare_region(raw_grey, out_grey, box, rule), rule)
    tally.audited += 1
    tally.ssim_sum += result.ssim or 0.0
    tally.changed_min = min(tally.changed_min, result.changed_weakest_half or 0.0)
    if not result.leaked:
        tally.protected += 1
        return
    tally.misses.append(result)
    if len(tally.tiles) < MAX_TILES:  # the OUTPUT's pixels: what the anonymized video shows of the leak
        x1, y1, x2, y2 = box
        tally.tiles.append((out[y1:y2, x1:x2].copy(), f"f{index} {x1},{y1},{x2},{y2}"))


def _pairs(
    raw_src, out_src, max_frames: int | None, counts: dict[str, Any]
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Frame pairs (i, raw_i, out_i) of the common prefix; then the longer stream's length is found out.

    That length is the container's frame count when it has one (decoding an hour of raw video to
    count it would take minutes), else the stream is decoded to its end.
    """
    raw_it, out_it = _frames(raw_src, counts["raw"]), _frames(out_src, counts["anonymized"])
    index = 0
    while max_frames is None or index < max_frames:
        raw, out = next(raw_it, None), next(out_it, None)
        if raw is None or out is None:
            if raw is not None:
                _count_rest(raw_src, raw_it, counts["raw"])
            if out is not None:
                _count_rest(out_src, out_it, counts["anonymized"])
            return
        yield index, raw, out
        index += 1
    counts["stopped_at_max_frames"] = True


def _count_rest(source, frames: Iterator[np.ndarray], stats: dict[str, Any]) -> None:
    if source.expected_frames and source.expected_frames > stats["decoded"]:
        stats["decoded"] = int(source.expected_frames)
        return
    for _ in frames:
        pass


def _persons_stream(
    pairs: Iterator[tuple[int, np.ndarray, np.ndarray]], persons_source: Detector | GroundTruth
) -> Iterator[tuple[int, np.ndarray, np.ndarray, list[Person]]]:
    """Attach the persons of each raw frame: looked up in the ground truth, or detected in chunks."""
    if isinstance(persons_source, GroundTruth):
        for index, raw, out in pairs:
            yield index, raw, out, persons_source.persons(index)
        return
    while True:
        chunk = [p for _, p in zip(range(DETECT_CHUNK), pairs, strict=False)]
        if not chunk:
            return
        dets = persons_source.detect([raw for _, raw, _ in chunk])
        for (index, raw, out), d in zip(chunk, dets, strict=True):
            yield (
                index,
                raw,
                out,
                [Person(tuple(b), None, float(s)) for b, s in zip(d.boxes.tolist(), d.scores, strict=True)],
            )


def audit(
    raw: str | Path,
    anonymized: str | Path,
    persons_source: PersonsSource,
    rule: AuditRule = AuditRule(),
    out_dir: str | Path | None = None,
    max_frames: int | None = None,
    scene: EmptyScene | None = None,
) -> dict[str, Any]:
    """Audit ``anonymized`` against ``raw``; the report dict (also ``out_dir/audit.json`` when given).

    ``persons_source``: a :class:`detectors.base.Detector` run on the raw frames, a
    :class:`GroundTruth` (:func:`read_mot_gt`), or a mapping {raw frame index: [Person, ...]}.
    ``scene``: a reviewed empty scene (:func:`read_empty_scene`, ``anonymizer.audit_scene``): each
    box is judged on what differs from it, and what it sets aside is reported under ``empty_scene``.

    Raises :class:`AuditInputError` for inputs the audit cannot compare (missing, undecodable,
    different frame sizes).
    """
    rule.validate()
    if isinstance(persons_source, Mapping):  # {frame index: [Person, ...]} from a caller's own annotations
        persons_source = GroundTruth({int(k): list(v) for k, v in persons_source.items()})
    if max_frames is not None and max_frames < 1:
        raise AuditInputError(f"max_frames must be >= 1, got {max_frames}")
    started = time.perf_counter()
    raw_src = _open(raw, "raw")
    try:
        out_src = _open(anonymized, "anonymized")
    except AuditInputError:
        raw_src.close()
        raise
    try:
        size = _check_sizes(raw_src, out_src)
        if scene is not None and scene.scene is None:
            build_empty_scene(raw, scene)
        counts: dict[str, Any] = {
            "raw": {"decoded": 0, "error": None},
            "anonymized": {"decoded": 0, "error": None},
            "stopped_at_max_frames": False,
        }
        tally, compared = Tally(), 0
        pairs = _pairs(raw_src, out_src, max_frames, counts)
        for index, raw_img, out_img, persons in _persons_stream(pairs, persons_source):
            _audit_frame(index, raw_img, out_img, persons, rule, tally, scene)
            compared += 1
    finally:
        raw_src.close()
        out_src.close()
    if compared == 0:
        raise AuditInputError(f"no frame could be compared: {counts['raw']['error'] or counts['anonymized']['error']}")
    report = build_report(
        raw, anonymized, persons_source, rule, size, counts, compared, tally, time.perf_counter() - started, scene
    )
    if out_dir is not None:
        write_outputs(report, tally.tiles, Path(out_dir))
    return report


def build_empty_scene(raw: str | Path, scene: EmptyScene) -> None:
    """Decode the raw video for the empty scene (a pass of its own: the empty frame may come after
    the frames it judges, and a median needs the whole video)."""
    source = _open(raw, "raw")
    try:
        frames = enumerate(_frames(source, {"decoded": 0, "error": None}))
        scene.set_scene(frames, source.expected_frames)
    finally:
        source.close()


def _check_sizes(raw_src, out_src) -> tuple[int, int]:
    if (raw_src.width, raw_src.height) != (out_src.width, out_src.height):
        raise AuditInputError(
            f"frame sizes differ: raw {raw_src.width}x{raw_src.height}, anonymized "
            f"{out_src.width}x{out_src.height} ({out_src.spec}); an anonymized video must keep "
            "the raw video's size"
        )
    return raw_src.width, raw_src.height


# ------------------------------------------------------------------------------------------ CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m anonymizer.audit",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 no miss, 1 some person leaked, 2 bad input.",
    )
    p.add_argument("--raw", required=True, metavar="RAW", help="the raw video file or image folder")
    p.add_argument("--anonymized", required=True, metavar="OUT.mp4", help="the pipeline's output video")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--gt", metavar="gt.txt", help="MOT-format ground truth of the raw video")
    who.add_argument(
        "--detector",
        metavar="MODEL",
        help="independent detector run on the raw frames: an OpenVINO SSD .xml (or its folder), "
        "'hog', or a model Ultralytics loads",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where audit.json and misses.png go (default: <anonymized folder>/<anonymized stem>.audit)",
    )
    p.add_argument(
        "--ssim-max",
        type=float,
        default=AuditRule.ssim_max,
        help="a box whose grey SSIM to the raw exceeds this is leaked (default: %(default)s)",
    )
    p.add_argument(
        "--min-changed",
        type=float,
        default=AuditRule.min_changed,
        help="least changed share of a box's weakest half (default: %(default)s)",
    )
    p.add_argument(
        "--change-level",
        type=int,
        default=AuditRule.change_level,
        help="grey-level difference that counts as changed (default: %(default)s)",
    )
    p.add_argument("--classes", default="1,2,7", help="GT classes audited (default: %(default)s)")
    p.add_argument("--min-visibility", type=float, default=0.5, help="GT visibility audited (default: %(default)s)")
    p.add_argument("--conf", type=float, default=0.3, help="detector confidence (default: %(default)s)")
    p.add_argument(
        "--min-box-height",
        type=int,
        default=AuditRule.min_box_height,
        help="persons lower than this (px) are counted as too_small, not audited",
    )
    p.add_argument(
        "--empty-scene",
        metavar="REVIEWED.yml",
        help="a reviewed empty scene of a static camera's raw video: each detection is judged on what differs "
        "from it, and detections of nothing but the scene are reported apart (anonymizer/audit_scene.py)",
    )
    p.add_argument("--max-frames", type=int, default=None, metavar="N")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def _persons_from_args(args: argparse.Namespace) -> Detector | GroundTruth:
    if not args.gt and not args.detector:
        raise AuditInputError("give the persons of the raw video: --gt gt.txt or --detector MODEL")
    if args.gt:
        try:
            classes = tuple(int(c) for c in args.classes.split(",") if c.strip())
        except ValueError:
            raise AuditInputError(f"--classes must be integers separated by commas, got {args.classes!r}") from None
        return read_mot_gt(args.gt, classes, args.min_visibility)
    if not 0.0 < args.conf < 1.0:
        raise AuditInputError(f"--conf must be in (0, 1), got {args.conf}")
    try:
        return build_audit_detector(args.detector, args.conf)
    except AuditInputError:
        raise
    except Exception as exc:  # DetectorError, FileNotFoundError, ValueError of a wrong model, runtime errors
        raise AuditInputError(f"cannot build detector {args.detector}: {exc}") from exc


def _warn_if_same_detector(anonymized: Path, persons: Detector | GroundTruth) -> None:
    """An audit with the pipeline's own detector cannot find the people that detector misses."""
    summary = anonymized.with_suffix(".summary.json")
    if isinstance(persons, GroundTruth) or not summary.is_file():
        return
    with contextlib.suppress(ValueError, OSError):
        used = str(json.loads(summary.read_text()).get("detector", ""))
        # ensembles and tiled detectors name their parts with '+': compare the models, not the slicing
        models = {part for part in persons.name.split("+") if not part.startswith("tiles(")}
        if models & set(used.split("+")):
            log.warning("the audit detector %s is the one the pipeline used: misses they share go unseen", persons.name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    anonymized = Path(args.anonymized)
    out_dir = Path(args.out) if args.out else anonymized.parent / f"{anonymized.stem}.audit"
    rule = AuditRule(
        ssim_max=args.ssim_max,
        min_changed=args.min_changed,
        change_level=args.change_level,
        min_box_height=args.min_box_height,
    )
    try:
        rule.validate()
        if not Path(args.raw).exists():
            raise AuditInputError(f"raw video not found: {args.raw}")
        if not anonymized.exists():
            raise AuditInputError(f"anonymized video not found: {anonymized}")
        scene = read_empty_scene(args.empty_scene, args.raw) if args.empty_scene else None
        persons = _persons_from_args(args)
        _warn_if_same_detector(anonymized, persons)
        report = audit(args.raw, anonymized, persons, rule, out_dir, args.max_frames, scene)
    except AuditInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(verdict_text(report))
    print(f"report: {out_dir / 'audit.json'}" + (f"; misses: {out_dir / 'misses.png'}" if report["missed"] else ""))
    return 1 if report["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
