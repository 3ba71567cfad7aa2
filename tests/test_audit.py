"""The privacy audit on real video with real detectors: a clean output passes, a planted leak and a
half-covered person are caught at the right frame and box, bad inputs exit 2, ground truth works."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import run_pipeline
from anonymizer.audit import AuditRule, audit, build_audit_detector, clip_box, grow_box, main, read_mot_gt
from anonymizer.baselines import BaselineAnonymizer
from tests.conftest import shared_path, vtest_path
from tests.video_utils import YOLO_OPENVINO, read_frames

FRAMES = 30
SSD = "detector_models/intel/pedestrian-detection-adas-0002/FP16/pedestrian-detection-adas-0002.xml"
GROW = 0.15


def encode(frames: list[np.ndarray], path: Path, fps: int = 10) -> Path:
    """BGR frames → H.264 (libx264 CRF 23, yuv420p), the pipeline's codec."""
    h, w = frames[0].shape[:2]
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-s",
            f"{w}x{h}",
            "-r",
            str(fps),
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        input=b"".join(f.tobytes() for f in frames),
        check=True,
    )
    return path


def mosaic_boxes(frame: np.ndarray, boxes, skip: int | None = None) -> np.ndarray:
    out = frame.copy()
    h, w = frame.shape[:2]
    anon = BaselineAnonymizer("mosaic")
    for k, box in enumerate(boxes):
        if k != skip:
            x1, y1, x2, y2 = grow_box(box, GROW, w, h)
            out[y1:y2, x1:x2] = anon.protect_one(frame[y1:y2, x1:x2])
    return out


def isolated_box(boxes, w: int, h: int) -> int:
    """Index of a box that no other box's grown region touches (so editing it affects no other box)."""
    for k, box in enumerate(boxes):
        bx1, by1, bx2, by2 = grow_box(box, GROW, w, h)
        others = [grow_box(b, GROW, w, h) for j, b in enumerate(boxes) if j != k]
        if box[3] - box[1] >= 40 and all(x2 <= bx1 or x1 >= bx2 or y2 <= by1 or y1 >= by2 for x1, y1, x2, y2 in others):
            return k
    raise AssertionError("no isolated person on this frame")


def strict_json(text: str) -> dict:
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def ssd():
    from detectors.openvino_ssd import OpenVinoSsdDetector

    return OpenVinoSsdDetector(shared_path(SSD), conf=0.3)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, ssd):
    """vtest's first 30 frames with every box the audit will check mosaicked (grown 15 %), H.264."""
    folder = tmp_path_factory.mktemp("clean")
    raw = read_frames(vtest_path(), FRAMES)
    boxes = [d.boxes.tolist() for d in ssd.detect(raw)]
    frames = [mosaic_boxes(f, b) for f, b in zip(raw, boxes, strict=True)]
    return SimpleNamespace(raw=raw, boxes=boxes, frames=frames, path=encode(frames, folder / "clean.mp4"))


def test_ssd_detector_finds_people_on_vtest():
    from detectors.openvino_ssd import OpenVinoSsdDetector

    det = OpenVinoSsdDetector(shared_path(SSD), conf=0.5)
    assert det.name == "openvino-ssd:pedestrian-detection-adas-0002"
    frame = read_frames(vtest_path(), 1)[0]
    (d,) = det.detect([frame])
    assert len(d) >= 3  # three people walk in the first frame
    heights = d.boxes[:, 3] - d.boxes[:, 1]
    assert np.all((heights > 50) & (heights < 150)) and np.all(d.scores >= 0.5)
    assert np.all(d.boxes[:, [0, 2]] <= 768) and np.all(d.boxes[:, [1, 3]] <= 576) and np.all(d.boxes >= 0)


def test_ssd_detector_refuses_a_yolo_model():
    from detectors.openvino_ssd import OpenVinoSsdDetector

    with pytest.raises(ValueError, match=r"\[1,1,N,7\]"):
        OpenVinoSsdDetector(shared_path(YOLO_OPENVINO) / "yolov8n.xml")


def test_build_audit_detector_picks_ssd_for_xml_and_its_folder():
    xml = shared_path(SSD)
    assert build_audit_detector(str(xml), 0.4).name == "openvino-ssd:pedestrian-detection-adas-0002"
    folder = build_audit_detector(str(xml.parent), 0.4)
    assert folder.name.startswith("openvino-ssd:") and folder.conf == pytest.approx(0.4)
    assert build_audit_detector("hog", 0.4).name == "hog"


def test_clean_output_passes(clean, tmp_path, capsys):
    out = tmp_path / "audit"
    rc = main(
        [
            "--raw",
            str(vtest_path()),
            "--anonymized",
            str(clean.path),
            "--detector",
            str(shared_path(SSD)),
            "--out",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    report = strict_json((out / "audit.json").read_text())
    assert rc == 0, report["misses"]
    assert report["verdict"] == "pass" and report["missed"] == 0 and report["coverage"] == 1.0
    assert report["audited"] == sum(len(b) for b in clean.boxes) > FRAMES
    assert not (out / "misses.png").exists()
    assert report["frames_compared"] == FRAMES and report["frames_anonymized"] == FRAMES
    assert report["frames_raw"] == 795 and "frame counts differ" in report["warnings"][0]
    assert report["background_changed_mean"] < 0.01  # only the boxes were touched
    assert "PASS" in stdout and "coverage 100.0%" in stdout and "Rule:" in stdout


def test_planted_leak_is_reported_at_its_frame_and_box(clean, ssd, tmp_path):
    k = 15
    frames = [f.copy() for f in clean.frames]
    h, w = frames[k].shape[:2]
    i = isolated_box(clean.boxes[k], w, h)
    x1, y1, x2, y2 = clip_box(clean.boxes[k][i], w, h)
    frames[k][y1:y2, x1:x2] = clean.raw[k][y1:y2, x1:x2]
    anonymized = encode(frames, tmp_path / "leak.mp4")
    report = audit(vtest_path(), anonymized, ssd, out_dir=tmp_path / "audit", max_frames=FRAMES)
    assert report["missed"] == 1 and report["verdict"] == "fail"
    (miss,) = report["misses"]
    assert miss["frame"] == k and miss["box"] == [x1, y1, x2, y2]
    assert miss["ssim"] > 0.9 and miss["changed"] < 0.05
    assert strict_json((tmp_path / "audit" / "audit.json").read_text()) == json.loads(json.dumps(report))
    sheet = cv2.imread(str(tmp_path / "audit" / "misses.png"))
    assert sheet is not None and sheet.shape[1] >= 96


def test_half_covered_person_is_flagged(clean, ssd, tmp_path):
    k = 20
    frames = [f.copy() for f in clean.frames]
    h, w = frames[k].shape[:2]
    i = isolated_box(clean.boxes[k], w, h)
    box = clip_box(clean.boxes[k][i], w, h)
    gx1, gy1, gx2, _ = grow_box(clean.boxes[k][i], GROW, w, h)
    middle = (box[1] + box[3]) // 2
    frames[k][gy1:middle, gx1:gx2] = clean.raw[k][gy1:middle, gx1:gx2]  # only the bottom half stays masked
    report = audit(vtest_path(), encode(frames, tmp_path / "half.mp4"), ssd, max_frames=FRAMES)
    (miss,) = report["misses"]
    assert miss["frame"] == k and miss["box"] == box
    assert miss["changed_weakest_half"] < 0.05 and any("weakest half" in r for r in miss["reasons"])


def test_real_pipeline_output_passes(tmp_path):
    """The real pipeline (YOLOv8n OpenVINO + mosaic) covers everyone the SSD finds in vtest's first
    30 frames (its first miss, a person behind a sign, comes at frame 44)."""
    out = tmp_path / "run"
    assert (
        run_pipeline.main(
            [
                "--source",
                str(vtest_path()),
                "--output",
                str(out),
                "--max-frames",
                str(FRAMES),
                "--detector",
                str(shared_path(YOLO_OPENVINO)),
                "--anonymizer",
                "mosaic",
                "LOG.PROGRESS",
                "False",
            ]
        )
        == 0
    )
    rc = main(
        [
            "--raw",
            str(vtest_path()),
            "--anonymized",
            str(out / "vtest.mp4"),
            "--detector",
            str(shared_path(SSD)),
            "--max-frames",
            str(FRAMES),
        ]
    )
    report = strict_json((out / "vtest.audit" / "audit.json").read_text())
    assert rc == 0, report["misses"]
    assert report["audited"] > 2 * FRAMES and report["coverage"] == 1.0
    assert report["rule"]["min_changed"] == AuditRule().min_changed


def _exit_2(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "error:" in err
    assert "Traceback" not in err
    return err


def test_bad_inputs_exit_2(clean, tmp_path, capsys):
    raw, ssd_xml = str(vtest_path()), str(shared_path(SSD))
    assert "not found" in _exit_2(
        ["--raw", str(tmp_path / "nope.avi"), "--anonymized", str(clean.path), "--detector", ssd_xml], capsys
    )
    assert "not found" in _exit_2(
        ["--raw", raw, "--anonymized", str(tmp_path / "nope.mp4"), "--detector", ssd_xml], capsys
    )
    small = encode([cv2.resize(f, (384, 288)) for f in clean.frames[:5]], tmp_path / "small.mp4")
    assert "sizes differ" in _exit_2(["--raw", raw, "--anonymized", str(small), "--detector", ssd_xml], capsys)
    assert "--gt" in _exit_2(["--raw", raw, "--anonymized", str(clean.path)], capsys)
    _exit_2(["--raw", raw, "--anonymized", str(clean.path), "--gt", str(tmp_path / "gt.txt")], capsys)
    _exit_2(["--raw", raw, "--anonymized", str(clean.path), "--detector", str(tmp_path / "model.xml")], capsys)
    not_video = tmp_path / "not_video.mp4"
    not_video.write_text("hello")
    _exit_2(["--raw", raw, "--anonymized", str(not_video), "--detector", ssd_xml], capsys)
    with pytest.raises(SystemExit) as exc:  # argparse: --gt and --detector together
        main(["--raw", raw, "--anonymized", str(clean.path), "--gt", "a", "--detector", "b"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- ground truth, synthetic frames
def _synthetic_scene(n: int = 12, w: int = 320, h: int = 240):
    """Smooth background and textured rectangles ("persons") that move: no real people needed."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.dstack([(xx * 0.5 + 40), (yy * 0.6 + 50), np.full((h, w), 120.0)]).astype(np.uint8)
    # smooth random texture (features of a few pixels, like clothes): the codec keeps it, a mosaic does not
    textures = {
        pid: cv2.resize(rng.integers(0, 256, (12, 6, 3), dtype=np.uint8), (30, 60), interpolation=cv2.INTER_CUBIC)
        for pid in (1, 2, 3, 4)
    }
    tiny = rng.integers(0, 256, (10, 6, 3), dtype=np.uint8)
    frames, rows = [], []
    for i in range(n):
        frame = background.copy()
        placed = {1: (20 + 5 * i, 30), 2: (150, 40 + 4 * i), 3: (250, 150), 4: (90, 160)}
        for pid, (x, y) in placed.items():
            frame[y : y + 60, x : x + 30] = textures[pid]
        frame[200:210, 300:306] = tiny
        frames.append(frame)
        # frame, id, left, top, width, height, consider, class, visibility
        rows += [
            f"{i + 1},1,{placed[1][0]},{placed[1][1]},30,60,1,1,1.0",
            f"{i + 1},2,{placed[2][0]},{placed[2][1]},30,60,0,1,0.9",  # consider 0: still audited
            f"{i + 1},3,250,150,30,60,1,1,0.2",  # barely visible: not audited
            f"{i + 1},4,90,160,30,60,1,8,1.0",  # distractor: person area only
            f"{i + 1},5,300,200,6,10,1,1,1.0",  # 10 px high: too small
            f"{i + 1},6,5,5,20,20,1,3,1.0",
        ]  # a car: ignored
    return frames, rows


def test_ground_truth_mode_on_an_image_folder(tmp_path, capsys):
    frames, rows = _synthetic_scene()
    raw_dir = tmp_path / "img1"
    raw_dir.mkdir()
    for i, frame in enumerate(frames):  # frame_2 must come before frame_10 (natural order)
        cv2.imwrite(str(raw_dir / f"frame_{i + 1}.png"), frame)
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join(rows) + "\n")

    truth = read_mot_gt(gt, classes=(1, 2, 7), min_visibility=0.5)
    first = truth.persons(0)
    assert [p.id for p in first] == [1, 2, 3, 4, 5] and [p.audited for p in first] == [True, True, False, False, True]
    assert first[0].box == (20.0, 30.0, 50.0, 90.0)

    anon = BaselineAnonymizer("mosaic")
    out_frames = []
    for i, frame in enumerate(frames):
        out = frame.copy()
        for p in truth.persons(i):
            if p.id in (1, 2) and not (p.id == 2 and i == 7):  # person 2 leaks on frame index 7
                x1, y1, x2, y2 = grow_box(p.box, 0.1, 320, 240)
                out[y1:y2, x1:x2] = anon.protect_one(frame[y1:y2, x1:x2])
        out[100:140, 200:240] = 0  # an over-masked background patch
        out_frames.append(out)
    anonymized = encode(out_frames, tmp_path / "img1.mp4")

    rc = main(["--raw", str(raw_dir), "--anonymized", str(anonymized), "--gt", str(gt)])
    report = strict_json((tmp_path / "img1.audit" / "audit.json").read_text())
    assert rc == 1 and "FAIL" in capsys.readouterr().out
    assert report["audited"] == 2 * len(frames) and report["too_small"] == len(frames)
    assert [(m["frame"], m["id"], m["box"]) for m in report["misses"]] == [(7, 2, [150, 68, 180, 128])]
    assert report["inputs"]["persons"]["kind"] == "ground_truth"
    assert 0.01 < report["background_changed_mean"] < 0.05  # the 40x40 patch, not a frame-order mix-up
    assert (tmp_path / "img1.audit" / "misses.png").is_file()
