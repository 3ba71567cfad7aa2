"""The audit against a reviewed empty scene (``--empty-scene``): a detector's static false positive
and a person's oversized box are judged on what differs from the empty scene, while a leak, and a
person who was not in the empty scene, are still caught. Synthetic frames: no real people needed."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from anonymizer.audit import AuditInputError, Person, audit, grow_box, main, read_empty_scene
from anonymizer.baselines import BaselineAnonymizer
from tests.test_audit import encode, strict_json

W, H, N = 320, 240, 10
PILLAR = (250, 20, 290, 200)  # a static, textured object the "detector" calls a person on every frame
TABLE = (40, 100, 90, 200)  # furniture inside the person's oversized box


def _texture(seed: int, wh: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (12, 6, 3), dtype=np.uint8), wh, interpolation=cv2.INTER_CUBIC)


def _scene(n: int = N):
    """Frame 0 is the empty room; on frames 1.. a person walks beside the table. Returns the raw
    frames, the persons a loose detector would report, and the person's tight boxes."""
    yy, xx = np.mgrid[0:H, 0:W]
    room = np.dstack([(xx * 0.4 + 60), (yy * 0.5 + 60), np.full((H, W), 130.0)]).astype(np.uint8)
    x1, y1, x2, y2 = PILLAR
    room[y1:y2, x1:x2] = _texture(1, (x2 - x1, y2 - y1))
    x1, y1, x2, y2 = TABLE
    room[y1:y2, x1:x2] = _texture(2, (x2 - x1, y2 - y1))
    person = _texture(3, (30, 90))
    frames, detections, tight = [room.copy()], {0: [Person(PILLAR)]}, {}
    for i in range(1, n):
        frame = room.copy()
        px = 95 + 6 * i
        frame[100:190, px : px + 30] = person
        frames.append(frame)
        tight[i] = (px, 100, px + 30, 190)
        # the loose box takes in the table as well as the person (twice the person's width and more)
        detections[i] = [Person(PILLAR), Person((TABLE[0], 95, px + 32, 195))]
    return frames, detections, tight


def _protect(frames, tight, skip: int | None = None):
    anon = BaselineAnonymizer("mosaic")
    out = []
    for i, frame in enumerate(frames):
        frame = frame.copy()
        if i in tight and i != skip:
            x1, y1, x2, y2 = grow_box(tight[i], 0.1, W, H)
            frame[y1:y2, x1:x2] = anon.protect_one(frame[y1:y2, x1:x2])
        out.append(frame)
    return out


def _grown(box, within):
    """A tight box grown by the audit's person margin (10 % per side) inside the detector's box
    ``within``, as the narrowed box is."""
    x1, y1, x2, y2 = box
    dx, dy = round((x2 - x1) * 0.1), round((y2 - y1) * 0.1)
    return (max(x1 - dx, within[0]), max(y1 - dy, within[1]), min(x2 + dx, within[2]), min(y2 + dy, within[3]))


def _near(box, expected, tol: int = 3) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(box, expected, strict=True))


def _folder(frames, path: Path) -> Path:
    path.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(path / f"{i:04d}.png"), frame)
    return path


def _review(tmp_path: Path, video: str = "img1", empty_frame: object = 0, **extra: object) -> Path:
    lines = [f"video: {video}", f"empty_frame: {empty_frame}", "reviewed: a test, on frame 0 (nobody in view)"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / "scene.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def room(tmp_path):
    frames, detections, tight = _scene()
    raw = _folder(frames, tmp_path / "img1")
    return raw, frames, detections, tight


def test_without_the_scene_the_loose_boxes_fail(room, tmp_path):
    raw, frames, detections, tight = room
    report = audit(raw, encode(_protect(frames, tight), tmp_path / "out.mp4"), detections)
    boxes = {tuple(m["box"]) for m in report["misses"]}
    assert PILLAR in boxes  # the static false positive counts as a miss on every frame
    assert report["missed"] >= N  # and so does the oversized box around the protected person


def test_the_scene_sets_aside_the_static_box_and_narrows_the_loose_one(room, tmp_path):
    raw, frames, detections, tight = room
    scene = read_empty_scene(_review(tmp_path), raw)
    report = audit(raw, encode(_protect(frames, tight), tmp_path / "out.mp4"), detections, scene=scene)
    assert report["missed"] == 0, report["misses"]
    assert report["audited"] == N - 1  # the person on frames 1..N-1, judged on their own pixels
    section = strict_json(json.dumps(report))["empty_scene"]
    assert section["set_aside"] == N and section["set_aside_would_leak"] == N  # the pillar, never silent
    assert section["narrowed"] == N - 1 and section["frames_without_scene"] == 0


def test_a_leak_is_still_caught_on_the_narrowed_box(room, tmp_path):
    raw, frames, detections, tight = room
    scene = read_empty_scene(_review(tmp_path), raw)
    report = audit(raw, encode(_protect(frames, tight, skip=5), tmp_path / "out.mp4"), detections, scene=scene)
    (miss,) = report["misses"]
    assert miss["frame"] == 5 and _near(miss["box"], _grown(tight[5], detections[5][1].box))
    assert miss["ssim"] > 0.9


def test_a_person_who_was_not_in_the_empty_scene_is_audited_even_standing_still(room, tmp_path):
    """Somebody standing in front of the pillar from frame 1 on, never moving, left raw: the empty
    frame does not hold them, so the pillar's box now holds new content and is judged on it."""
    raw, frames, detections, tight = room
    still = _texture(4, (30, 90))
    for frame in frames[1:]:
        frame[60:150, 255:285] = still
    raw2 = _folder(frames, tmp_path / "img2")
    scene = read_empty_scene(_review(tmp_path, video="img2"), raw2)
    report = audit(raw2, encode(_protect(frames, tight), tmp_path / "out.mp4"), detections, scene=scene)
    flagged = {m["frame"] for m in report["misses"]}
    assert flagged == set(range(1, N))
    assert all(_near(m["box"], _grown((255, 60, 285, 150), PILLAR)) for m in report["misses"])
    assert report["empty_scene"]["set_aside"] == 1  # only frame 0, where the pillar is alone


def test_a_frame_unlike_the_scene_is_audited_without_it(room, tmp_path):
    raw, frames, detections, tight = room
    frames = [f if i != 3 else cv2.convertScaleAbs(f, alpha=1.0, beta=80) for i, f in enumerate(frames)]
    raw2 = _folder(frames, tmp_path / "img2")
    scene = read_empty_scene(_review(tmp_path, video="img2"), raw2)
    report = audit(raw2, encode(_protect(frames, tight), tmp_path / "out.mp4"), detections, scene=scene)
    assert report["empty_scene"]["frames_without_scene"] == 1
    assert {m["frame"] for m in report["misses"]} == {3}  # there the loose boxes are judged whole again


def test_a_median_scene_drops_a_walker(room, tmp_path):
    raw, frames, detections, tight = room
    scene = read_empty_scene(_review(tmp_path, empty_frame="median"), raw)
    report = audit(raw, encode(_protect(frames, tight), tmp_path / "out.mp4"), detections, scene=scene)
    assert report["missed"] == 0 and report["empty_scene"]["set_aside"] == N
    assert report["empty_scene"]["empty_frame"] == "median"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"video": "other.mp4"}, "reviewed for other.mp4"),
        ({"empty_frame": -1}, "empty_frame must be"),
        ({"empty_frame": "first"}, "empty_frame must be"),
        ({"empty_frame": 999}, "not in the raw video"),
        ({"extra": "x"}, "unknown keys"),
    ],
)
def test_a_bad_review_file_exits_2(room, tmp_path, capsys, kwargs, message):
    raw, frames, detections, tight = room
    out = encode(_protect(frames, tight), tmp_path / "out.mp4")
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,100,100,30,90,1,1,1.0\n")
    review = _review(tmp_path, **kwargs)
    rc = main(["--raw", str(raw), "--anonymized", str(out), "--gt", str(gt), "--empty-scene", str(review)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_a_review_without_a_reviewer_is_refused(room, tmp_path):
    raw = room[0]
    path = tmp_path / "scene.yml"
    path.write_text("video: img1\nempty_frame: 0\n")
    with pytest.raises(AuditInputError, match="reviewed"):
        read_empty_scene(path, raw)


def test_the_command_line_names_the_scene_in_its_verdict(room, tmp_path, capsys):
    raw, frames, detections, tight = room
    out = encode(_protect(frames, tight), tmp_path / "out.mp4")
    gt = tmp_path / "gt.txt"  # MOT rows (1-based frames) of the loose boxes
    rows = []
    for i, persons in detections.items():
        for k, p in enumerate(persons):
            x1, y1, x2, y2 = p.box
            rows.append(f"{i + 1},{k + 1},{x1},{y1},{x2 - x1},{y2 - y1},1,1,1.0")
    gt.write_text("\n".join(rows) + "\n")
    review = _review(tmp_path)
    rc = main(["--raw", str(raw), "--anonymized", str(out), "--gt", str(gt), "--empty-scene", str(review)])
    text = capsys.readouterr().out
    assert rc == 0 and "PASS" in text and f"reviewed empty scene {review}" in text and "set aside" in text


def test_a_median_of_a_stream_of_unknown_length_holds_few_frames(monkeypatch):
    """No frame count (a stream whose length the container does not say): the picked frames are
    thinned as they come, and the median still drops a walker."""
    import anonymizer.audit_scene as audit_scene

    monkeypatch.setattr(audit_scene, "MEDIAN_FRAMES", 4)
    background = np.full((40, 60, 3), 90, np.uint8)
    held: list[int] = []
    original_stack = np.stack

    def frames():
        for i in range(200):
            frame = background.copy()
            frame[5:35, (i * 7) % 50 : (i * 7) % 50 + 8] = 250  # the walker, somewhere else each frame
            yield i, frame

    def counting_stack(arrays, *args, **kwargs):
        held.append(len(arrays))
        return original_stack(arrays, *args, **kwargs)

    monkeypatch.setattr(audit_scene.np, "stack", counting_stack)
    scene = audit_scene.EmptyScene("x.yml", "x", "median", "a test")
    scene.set_scene(frames(), None)
    assert held and held[0] < 2 * 4
    assert scene.scene is not None and int(np.abs(scene.scene.astype(int) - 90).max()) == 0
