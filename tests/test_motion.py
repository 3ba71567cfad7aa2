"""Motion safety net (detectors/motion.py): moving people no detection covers, fail-closed warm-up,
moving-camera switch-off, person-size filter. Synthetic scenes where the geometry must be exact,
real frames (vtest.avi, MOT17) where the behaviour on people matters."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from detectors.motion import MotionSafetyNet
from tests.conftest import shared_path, vtest_path
from tests.video_utils import read_frames

W, H = 640, 480


def _background(seed: int = 0) -> np.ndarray:
    """A static textured scene (blurred noise), BGR."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (H // 8, W // 8, 3), dtype=np.uint8)
    return cv2.resize(noise, (W, H), interpolation=cv2.INTER_CUBIC)


def _with_sensor_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = img.astype(np.int16) + rng.integers(-3, 4, img.shape, dtype=np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _paint(img: np.ndarray, box: tuple[int, int, int, int], value: int) -> np.ndarray:
    out = img.copy()
    x1, y1, x2, y2 = box
    out[y1:y2, x1:x2] = value
    return out


def _overlap(a, b) -> float:
    """Share of box ``a`` inside box ``b``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / max(1e-9, (a[2] - a[0]) * (a[3] - a[1]))


def _covered_by_boxes(box, boxes, shape) -> float:
    """Share of ``box``'s area inside the union of ``boxes``."""
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(shape[1], int(np.ceil(box[2]))), min(shape[0], int(np.ceil(box[3])))
    if x2 <= x1 or y2 <= y1:
        return 1.0
    inside = np.zeros((y2 - y1, x2 - x1), bool)
    for b in boxes:
        inside[
            max(0, int(b[1]) - y1) : max(0, int(np.ceil(b[3])) - y1),
            max(0, int(b[0]) - x1) : max(0, int(np.ceil(b[2])) - x1),
        ] = True
    return float(inside.mean())


def _primed_net(bg: np.ndarray, warmup: int = 10, **kw) -> MotionSafetyNet:
    rng = np.random.default_rng(1)
    net = MotionSafetyNet(mode="on", warmup_frames=warmup, **kw)
    assert net.prime(_with_sensor_noise(bg, rng) for _ in range(warmup)) == warmup
    return net


def test_moving_blob_no_detector_reports_is_returned_unless_covered():
    bg = _background()
    net = _primed_net(bg)
    rng = np.random.default_rng(2)
    for step in range(8):
        x = 60 + 40 * step
        person = (x, 150, x + 50, 330)  # 50 x 180 px, darker than anything around
        frame = _with_sensor_noise(_paint(bg, person, 10), rng)
        res = net.update(frame, [])
        assert res.state == "active" and not res.mask_frame
        hits = [b for b in res.boxes if _overlap(person, b) > 0.95]
        assert hits, f"step {step}: moving rectangle {person} not returned, got {res.boxes.tolist()}"
        assert all(_overlap(b, (0, 0, W, H)) == 1.0 for b in res.boxes)  # clipped to the frame
        covered = net.update(_with_sensor_noise(_paint(bg, person, 10), rng), [(x - 10, 135, x + 60, 345)])
        assert not any(_overlap(person, b) > 0.1 for b in covered.boxes), covered.boxes.tolist()


def test_undetected_person_merged_with_a_detected_one_is_still_returned():
    bg = _background(3)
    net = _primed_net(bg)
    rng = np.random.default_rng(4)
    # touching: one blob, at least MOTION_COVERED (0.9) of it detected, so only what sticks out comes back
    detected, missed = (200, 120, 330, 360), (330, 270, 362, 340)
    frame = _with_sensor_noise(_paint(_paint(bg, detected, 10), missed, 10), rng)
    res = net.update(frame, [detected])
    assert any(_overlap(missed, b) > 0.9 for b in res.boxes), res.boxes.tolist()
    assert not any(_overlap(detected, b) > 0.5 for b in res.boxes)


def test_a_blob_only_partly_inside_the_masked_regions_is_returned_whole():
    """A walker mostly inside someone else's (or a false) box keeps no raw strip outside it."""
    bg = _background(3)
    net = _primed_net(bg)
    rng = np.random.default_rng(4)
    walker, other = (300, 150, 350, 330), (320, 100, 480, 360)  # 60 % of the walker inside the other box
    frame = _with_sensor_noise(_paint(bg, walker, 10), rng)
    res = net.update(frame, [other])
    assert any(_overlap(walker, b) > 0.95 for b in res.boxes), res.boxes.tolist()


def test_warm_up_fails_closed_and_priming_makes_frame_0_active():
    bg = _background(5)
    rng = np.random.default_rng(6)
    frames = [_with_sensor_noise(bg, rng) for _ in range(8)]
    live = MotionSafetyNet(mode="on", warmup_frames=5)
    states = [live.update(f, []) for f in frames]
    assert [(r.state, r.mask_frame) for r in states[:5]] == [("warming_up", True)] * 5
    assert all(len(r.boxes) == 0 for r in states[:5])
    assert [(r.state, r.mask_frame) for r in states[5:]] == [("active", False)] * 3

    primed = MotionSafetyNet(mode="on", warmup_frames=5)
    assert primed.prime(iter(frames)) == 5  # takes only the warm-up it needs
    first = primed.update(frames[0], [])
    assert (first.state, first.mask_frame) == ("active", False)
    assert primed.prime(iter(frames)) == 0  # once, before the first update

    short = MotionSafetyNet(mode="on", warmup_frames=5)  # a file shorter than the warm-up
    assert short.prime(iter(frames[:3])) == 3
    replay = [short.update(f, []) for f in frames]  # frames 0-2 again, then 3-4 complete it
    assert [r.mask_frame for r in replay] == [True] * 5 + [False] * 3

    resized = primed.update(cv2.resize(frames[1], (W // 2, H // 2)), [])
    assert (resized.state, resized.mask_frame) == ("warming_up", True)  # a new frame size: learn again


def test_size_filter_drops_specks_but_keeps_a_large_merged_blob():
    bg = _background(7)
    net = _primed_net(bg)
    rng = np.random.default_rng(8)
    frame = bg.copy()
    for y in range(20, 200, 60):  # 8 x 8 px specks: survive the opening, not a person
        for x in range(20, W - 20, 60):
            frame[y : y + 8, x : x + 8] = 255 - frame[y : y + 8, x : x + 8]
    group = (150, 240, 600, 470)  # a group of people: one big blob, 44 % of the frame
    frame = _with_sensor_noise(_paint(frame, group, 5), rng)
    boxes = net.update(frame, []).boxes
    assert len(boxes) == 1, boxes.tolist()
    assert _overlap(group, boxes[0]) > 0.98


def test_off_mode_does_nothing():
    net = MotionSafetyNet(mode="off")
    assert not net.enabled
    assert net.prime(iter([_background()])) == 0
    res = net.update(_background(), [])
    assert (res.state, res.mask_frame, len(res.boxes)) == ("off", False, 0)


def test_from_config_reads_the_privacy_keys_and_yaml_booleans():
    from configs.pipeline_defaults import get_pipeline_defaults

    cfg = get_pipeline_defaults()
    net = MotionSafetyNet.from_config(cfg.PRIVACY, camera_id="cam0")
    assert (net.mode, net.width, net.warmup_frames, net.camera_id) == (
        str(cfg.PRIVACY.MOTION_NET),
        cfg.PRIVACY.MOTION_WIDTH,
        cfg.PRIVACY.MOTION_WARMUP_FRAMES,
        "cam0",
    )
    cfg.defrost()
    cfg.PRIVACY.MOTION_NET = False  # what YAML 1.1 makes of a bare `off`
    assert not MotionSafetyNet.from_config(cfg.PRIVACY).enabled
    with pytest.raises(ValueError, match="mode"):
        MotionSafetyNet(mode="sometimes")


def test_auto_switches_off_on_a_panning_camera_and_stays_on_when_static(caplog):
    frames = read_frames(vtest_path(), 40)
    still = MotionSafetyNet(mode="auto", warmup_frames=30, camera_id="static-cam")
    assert still.prime(frames[:30]) == 30
    assert all(still.update(f, []).state == "active" for f in frames[:40])
    live = MotionSafetyNet(mode="auto", warmup_frames=30, camera_id="static-cam")  # no priming: decides live
    assert [live.update(f, []).state for f in frames] == ["warming_up"] * 30 + ["active"] * 10

    base = cv2.resize(frames[0], None, fx=1.25, fy=1.25)  # a static frame, panned 3 px a frame
    pan = [base[40 : 40 + 576, 20 + 3 * i : 20 + 3 * i + 768] for i in range(12)]
    moving = MotionSafetyNet(mode="auto", warmup_frames=30, camera_id="pan-cam")
    with caplog.at_level(logging.WARNING, logger="detectors.motion"):
        states = [moving.update(f, []) for f in pan]
    assert states[0].state == "warming_up"
    assert states[-1].state == "off_moving_camera" and not moving.enabled
    first_off = next(i for i, r in enumerate(states) if r.state == "off_moving_camera")
    assert first_off <= 5
    assert all(not r.mask_frame and len(r.boxes) == 0 for r in states[first_off:])
    warnings = [r for r in caplog.records if r.name == "detectors.motion"]
    assert len(warnings) == 1 and "pan-cam" in warnings[0].getMessage()

    forced = MotionSafetyNet(mode="on", warmup_frames=3)  # 'on' never switches itself off
    assert all(forced.update(f, []).state != "off_moving_camera" for f in pan)


def test_auto_on_mot17_moving_and_static_cameras():
    root = shared_path("mot17_dev/MOT17-mini/train")

    def seq(name: str) -> list[np.ndarray]:
        return [cv2.imread(str(p)) for p in sorted((root / name / "img1").glob("*.jpg"))]

    moving = seq("MOT17-05-FRCNN")  # hand-held camera, 6 frames
    primed = MotionSafetyNet(mode="auto", camera_id="mot05")
    primed.prime(moving)
    assert primed.state == "off_moving_camera"  # decided before frame 0
    live = MotionSafetyNet(mode="auto", camera_id="mot05")
    assert [live.update(f, []).state for f in moving][-1] == "off_moving_camera"
    for name in ("MOT17-02-FRCNN", "MOT17-04-FRCNN"):  # static cameras, 1920x1080
        net = MotionSafetyNet(mode="auto", warmup_frames=3)
        frames = seq(name)
        net.prime(frames)
        assert [net.update(f, []).state for f in frames] == ["active"] * len(frames), name


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / max(union, 1e-9)


def test_vtest_blobs_cover_the_people_yolo_sees():
    # The clip starts at vtest frame 75: people walk slowly through its first seconds, so a model
    # that learned the raw warm-up frames takes them for background (8 of 17 YOLO people covered in
    # the first second, against 17 of 17 with the cleaned warm-up).
    clip = read_frames(vtest_path(), 155)[75:]
    model = shared_path("detector_models/ultralytics/yolov8n_int8_openvino_model")
    from detectors.ultralytics_detector import UltralyticsDetector

    detector = UltralyticsDetector(model, conf=0.3)
    early, late = [0, 5, 10], [35, 45, 55, 65, 75]  # early: people the priming frames also saw
    asked = early + [25] + late
    reference = {i: d.boxes for i, d in zip(asked, detector.detect([clip[i] for i in asked]), strict=True)}

    net = MotionSafetyNet(mode="auto", warmup_frames=30, camera_id="vtest")
    assert net.prime(clip[:30]) == 30
    counts = {"early": [0, 0], "late": [0, 0]}
    frame_share = []
    for i, frame in enumerate(clip):
        res = net.update(frame, [])
        assert (res.state, res.mask_frame) == ("active", False)
        if i not in early + late:
            continue
        people = reference[i]
        if i in late:  # someone standing where they stood a second ago is the detector's job, not a motion net's
            people = [b for b in people if not any(_iou(b, p) > 0.8 for p in reference[i - 10])]
        inside = [_covered_by_boxes(b, res.boxes, frame.shape) >= 0.5 for b in people]
        count = counts["early" if i in early else "late"]
        count[0] += sum(inside)
        count[1] += len(people)
        frame_share.append(_covered_by_boxes((0, 0, frame.shape[1], frame.shape[0]), res.boxes, frame.shape))
    for part, (hit, total) in counts.items():
        assert total >= 10 and hit >= 0.9 * total, f"{part}: {hit}/{total} YOLO people at least half inside blobs"
    assert max(frame_share) < 0.4, f"blobs mask {max(frame_share):.0%} of a frame: not a person detector any more"


def test_the_motion_net_gives_the_same_masks_on_a_second_run_in_the_same_process():
    """OpenCV's KNN samples with a per-thread RNG that runs on between runs unless it is seeded."""
    frames = read_frames(vtest_path(), 40)

    def boxes() -> list:
        net = MotionSafetyNet("on", warmup_frames=10)
        out = []
        for frame in frames:
            result = net.update(frame, [])
            out.append(np.asarray(result.boxes).round(1).tolist())
        return out

    first = boxes()
    assert any(first[10:]), "the net found moving people once it had learned"
    assert boxes() == first
