"""Recall-first redaction: two thresholds, tiles, merging, ensembles, HOG upscaling and look-ahead.

Real frames and real models where detection is what is tested; synthetic boxes only where the
tracker's and the planner's bookkeeping is (look-ahead, merging).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import run_pipeline
from anonymizer.image_metrics import ssim_uint8
from configs import build_config
from configs.pipeline_defaults import get_pipeline_defaults
from detectors.base import Detections
from detectors.factory import build_detector
from detectors.merge import merge_boxes
from detectors.tiling import TileGrid, parse_grid
from detectors.tracker import CameraTracker
from stream.regions import CameraRegions
from stream.sources import Frame
from tests.conftest import shared_path, vtest_path
from tests.kafka_fixtures import read_all
from tests.video_utils import YOLO_OPENVINO, load_jsonl, read_frames
from transport.schema import decode_message

MOT04 = "mot17_dev/MOT17-mini/train/MOT17-04-FRCNN"
OSNET = "reid_models/boxmot_export/osnet_x0_25_msmt17.onnx"


def detector_cfg(*overrides: str):
    return build_config(get_pipeline_defaults(), None, list(overrides)).DETECTOR


def mot_persons(seq, frame: int, min_visibility: float = 0.5) -> np.ndarray:
    gt = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",")
    rows = gt[(gt[:, 0] == frame) & np.isin(gt[:, 7], [1, 2, 7]) & (gt[:, 8] >= min_visibility)]
    return np.stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]], 1)


def found(gt_boxes: np.ndarray, dets: Detections, iou: float = 0.5) -> np.ndarray:
    """Which ground-truth boxes some detection overlaps with at least ``iou``."""
    from detectors.merge import pairwise_overlap

    if not len(dets):
        return np.zeros(len(gt_boxes), bool)
    return np.array([pairwise_overlap(g, dets.boxes)[0].max() >= iou for g in gt_boxes])


# ---- merging and tile geometry --------------------------------------------------------------------
def test_merge_grows_the_kept_box_to_the_union_of_tile_cut_halves():
    top_half = [100, 100, 140, 160]  # a tile border cut the person at y = 160
    whole = [98, 100, 142, 220]  # the full frame saw all of them, with a lower score
    elsewhere = [400, 100, 440, 200]
    merged = merge_boxes(Detections([top_half, whole, elsewhere], [0.9, 0.4, 0.3]))
    assert len(merged) == 2
    kept = merged.boxes[np.argmax(merged.scores)]
    assert kept.tolist() == [98, 100, 142, 220] and merged.scores.max() == pytest.approx(0.9)


def test_tile_windows_cover_the_frame_with_overlap():
    windows = TileGrid(3, 2, 0.2).windows(1920, 1080)
    assert len(windows) == 6
    cover = np.zeros((1080, 1920), bool)
    for x1, y1, x2, y2 in windows:
        cover[y1:y2, x1:x2] = True
    assert cover.all()
    (ax1, _, ax2, _), (bx1, _, _, _) = windows[0], windows[1]
    assert ax2 - bx1 == pytest.approx(0.2 * (ax2 - ax1), abs=2)


def test_auto_grid_tiles_large_frames_only():
    assert parse_grid("auto", 768, 576, 640, 0.2) is None
    assert parse_grid("auto", 1920, 1080, 640, 0.2) == TileGrid(3, 2, 0.2)
    assert parse_grid("2x2", 768, 576, 640, 0.2) == TileGrid(2, 2, 0.2)
    with pytest.raises(ValueError, match="TILES"):
        parse_grid("lots", 1920, 1080, 640, 0.2)


@pytest.mark.parametrize(
    "overrides",
    [
        ("DETECTOR.MASK_CONF", "0.5", "DETECTOR.CONF", "0.3"),
        ("DETECTOR.CONF", "5.0"),
        ("DETECTOR.TILES", "'many'"),
        ("PRIVACY.MOTION_NET", "sometimes"),
        ("PRIVACY.LOOKAHEAD_FRAMES", "-1"),
        ("ANONYMIZER.MARGIN", "-0.4"),
        ("ANONYMIZER.MOSAIC_SIZE", "2"),
        ("ANONYMIZER.BLUR_RADIUS", "0.01"),
        ("ANONYMIZER.FILL", "(300, 0, 0)"),
    ],
)
def test_settings_that_cannot_protect_are_refused_with_exit_2(tmp_path, capsys, overrides):
    code = run_pipeline.main(
        [
            "--source",
            str(vtest_path()),
            "--output",
            str(tmp_path),
            "--detector",
            "hog",
            "--anonymizer",
            "mosaic",
            *overrides,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert overrides[0].split(".")[0] in err and "Traceback" not in err


# ---- real detectors on real frames --------------------------------------------------------------
def test_tiles_find_people_the_full_frame_at_model_size_misses():
    seq = shared_path(MOT04)
    frame = cv2.imread(str(seq / "img1" / "000001.jpg"))
    gt = mot_persons(seq, 1)
    model = str(shared_path(YOLO_OPENVINO))
    at = ("DETECTOR.MASK_CONF", "0.25")  # the same score floor for both: only the slicing differs
    whole = build_detector(model, detector_cfg("DETECTOR.TILES", "off", *at))
    tiled = build_detector(model, detector_cfg("DETECTOR.TILES", "auto", *at))
    assert "tiles" in tiled.name
    (d_whole,), (d_tiled,) = whole.detect([frame]), tiled.detect([frame])
    hit_whole, hit_tiled = found(gt, d_whole), found(gt, d_tiled)
    only_tiles = hit_tiled & ~hit_whole
    assert only_tiles.sum() >= 3, (hit_whole.sum(), hit_tiled.sum())
    assert hit_tiled.sum() > hit_whole.sum()


def test_ensemble_masks_the_union_of_both_detectors():
    frame = read_frames(vtest_path(), limit=1)[0]
    model = str(shared_path(YOLO_OPENVINO))
    cfg = detector_cfg()
    yolo, hog = build_detector(model, cfg), build_detector("hog", cfg)
    both = build_detector(f"{model},hog", cfg)
    assert both.name == f"{yolo.name}+hog"
    (u,), (y,), (h,) = both.detect([frame]), yolo.detect([frame]), hog.detect([frame])
    assert len(y) and len(h)
    for member in (y, h):  # every member box lies inside some merged box
        for box in member.boxes:
            inside = (
                (u.boxes[:, 0] <= box[0] + 1)
                & (u.boxes[:, 1] <= box[1] + 1)
                & (u.boxes[:, 2] >= box[2] - 1)
                & (u.boxes[:, 3] >= box[3] - 1)
            )
            assert inside.any()


def test_upscaled_hog_finds_people_native_hog_misses():
    frames = read_frames(vtest_path(), limit=40)[::8]
    native = build_detector("hog", detector_cfg("DETECTOR.HOG_UPSCALE", "1.0", "DETECTOR.HOG_WIDTH", "640"))
    upscaled = build_detector("hog", detector_cfg())
    small = lambda dets: sum(int(((d.boxes[:, 3] - d.boxes[:, 1]) < 128).sum()) for d in dets)  # noqa: E731
    assert small(upscaled.detect(frames)) > small(native.detect(frames))


# ---- two thresholds, end to end: masked, never published ------------------------------------------
@pytest.mark.timeout(240)
def test_low_score_regions_are_masked_and_never_published(kafka_broker, fresh_topic, tmp_path):
    reid, detector = shared_path(OSNET), shared_path(YOLO_OPENVINO)
    frames = 30
    code = run_pipeline.main(
        [
            "--source",
            str(vtest_path()),
            "--camera-id",
            "lobby",
            "--output",
            str(tmp_path),
            "--max-frames",
            str(frames),
            "--detector",
            str(detector),
            "--anonymizer",
            "mosaic",
            "--kafka",
            kafka_broker.bootstrap,
            "KAFKA.TOPIC",
            fresh_topic,
            "REID.MODEL",
            str(reid),
            "LOG.PROGRESS",
            "False",
            "DETECTOR.CONF",
            "0.6",
            "DETECTOR.MASK_CONF",
            "0.05",
            "PRIVACY.MOTION_NET",
            "off",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "lobby.summary.json").read_text())
    obs = load_jsonl(tmp_path / "lobby.observations.jsonl")
    low = [o for o in obs if o["kind"] == "low_score"]
    assert low and summary["low_score_masks"] == len(low)
    assert all(0.05 <= o["score"] < 0.6 and o["track_id"] == -1 and o["region"] for o in low)
    persons = {(o["frame_index"], o["track_id"]) for o in obs if o["kind"] == "person" and o["track_id"] >= 0}
    records = read_all(kafka_broker.bootstrap, fresh_topic, expect=summary["published"])
    assert len(records) == summary["published"] == len(persons)
    assert all(
        (m.frame_index, m.track_id) in persons and m.score >= 0.6 for m in (decode_message(r.value) for r in records)
    )
    raw, out = read_frames(vtest_path(), limit=frames), read_frames(tmp_path / "lobby.mp4")
    for o in low[:40]:  # the low-score regions left the pipeline protected, not raw
        x1, y1, x2, y2 = o["region"]
        a, b = (
            cv2.cvtColor(f[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY) for f in (raw[o["frame_index"]], out[o["frame_index"]])
        )
        if min(a.shape) >= 8:
            assert ssim_uint8(cv2.resize(a, (64, 128)), cv2.resize(b, (64, 128))) < 0.75


# ---- look-ahead ------------------------------------------------------------------------------------
def _frame(i: int) -> Frame:
    return Frame(i, i * 100, np.zeros((480, 640, 3), np.uint8))


def test_lookahead_masks_the_frames_before_the_first_detection():
    regions = CameraRegions(CameraTracker("bytetrack", 5, 10.0), conf=0.25, margin=0.1, lookahead=3)
    box = np.array([[300, 100, 360, 260]], np.float32)
    planned = []
    for i in range(12):
        dets = Detections(box + 4 * max(0, i - 6), [0.9]) if i >= 6 else Detections()
        planned += regions.add(_frame(i), dets)
    planned += regions.flush()
    by_index = {p.frame.index: p for p in planned}
    assert sorted(by_index) == list(range(12))  # every frame comes out once, in order
    assert [p.frame.index for p in planned] == list(range(12))
    before = by_index[5].observations
    assert any(o.kind == "lookahead" for o in before), "the frame just before the first detection is masked"
    carried = [o for o in before if o.kind == "lookahead"][0]
    assert carried.box[0] <= 300 and carried.box[2] >= 360 and not carried.is_person
    assert not any(o.kind == "lookahead" for o in by_index[1].observations)  # outside the 3-frame window


def test_without_lookahead_frames_are_not_delayed():
    regions = CameraRegions(CameraTracker("bytetrack", 5, 10.0), conf=0.25, margin=0.1, lookahead=0)
    out = regions.add(_frame(0), Detections([[10, 10, 50, 120]], [0.9]))
    assert [p.frame.index for p in out] == [0]


# ---- held tracks supported by low-score fragments -------------------------------------------------------
def _held_boxes(regions: CameraRegions, frames: int, fragment: bool, start: int = 0) -> list[bool]:
    """Whether the lost track's box is still masked on each frame after the person stops being found."""
    still = []
    for i in range(start, start + frames):
        dets = Detections([[312, 110, 328, 140]], [0.08]) if fragment else Detections()  # a head, low score
        planned = regions.add(_frame(i), dets)[0]
        still.append(any(o.kind == "held" and o.track_id >= 0 for o in planned.observations))
    return still


@pytest.mark.parametrize("fragment", [True, False])
def test_a_lost_track_stays_masked_while_low_score_fragments_keep_turning_up_in_it(fragment):
    regions = CameraRegions(CameraTracker("bytetrack", 5, 10.0), conf=0.25, margin=0.1)
    box = np.array([[300, 100, 360, 260]], np.float32)
    for i in range(8):  # a confirmed track
        regions.add(_frame(i), Detections(box, [0.9]))
    held = _held_boxes(regions, 30, fragment, start=8)
    assert held[:5] == [True] * 5  # the plain hold
    if fragment:  # found only as a fragment: held for as long as the fragments come (past the tracker's buffer)
        assert all(held)
    else:
        assert not any(held[6:])  # 5 frames of hold, then given up
