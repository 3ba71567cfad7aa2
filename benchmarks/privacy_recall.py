"""Who leaves the pipeline recognizable, per configuration: coverage, audit misses, cost, speed.

    python benchmarks/privacy_recall.py [--configs 0,4] [--max-frames N] [--no-doc] [--merge]
    python benchmarks/privacy_recall.py --sweep      # the detector screen of score floors x tile grids

For each configuration (today's defaults before recall-first redaction, each protection alone,
the new defaults, look-ahead, the aspect floor, the privacy floor's threshold, the HOG fallback
before and after), in one run:

* **MOT17 coverage**: the pipeline on ``../shared/data/mot17_dev`` (image folders), audited against
  ground truth (classes 1, 2, 7, visibility >= 0.5) with the audit's rule (``anonymizer.audit``);
  and the area the pipeline replaced (the union of its regions, from its observations) over the
  area of all ground-truth persons of any visibility (goal: at most 2×);
* **audit misses** on ``vtest.avi`` and the Intel sample videos, the persons of each raw video found
  by two independent detectors (YOLOv8n INT8 at 0.25, Intel's pedestrian-detection-adas-0002 SSD
  at 0.5), run once per video and shared by every configuration;
* the share of the frame changed outside person boxes (the audit's background measure);
* frames per second of the whole pipeline on vtest.avi (decode, detect, regions, redact, encode).

The anonymizer is mosaic (so that speed differences come from the protections measured here),
except in the two rows that run the default learned anonymizer, as the README's commands do. Writes ``benchmarks/results/privacy_recall.json``, the table in
``docs/benchmarks.md`` and ``docs/figures/privacy_recall.png`` (coverage against fps).
Outputs (videos, audit folders) go to a temporary folder that is deleted: they show real people.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anonymizer.audit import (  # noqa: E402
    AuditRule,
    EmptyScene,
    GroundTruth,
    Person,
    audit,
    build_audit_detector,
    build_empty_scene,
    read_empty_scene,
    read_mot_gt,
)
from anonymizer.factory import build_anonymizer  # noqa: E402
from benchmarks.report import REPO_ROOT, RESULTS_DIR, command_line, machine, machine_line, publish_table, save_json  # noqa: E402
from configs import build_config  # noqa: E402
from configs.pipeline_defaults import get_pipeline_defaults  # noqa: E402
from detectors.factory import build_detector  # noqa: E402
from stream.pipeline import CameraSpec, Pipeline  # noqa: E402
from stream.sources import open_source  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"
YOLO = SHARED / "detector_models/ultralytics/yolov8n_int8_openvino_model"
SSD = SHARED / "detector_models/intel/pedestrian-detection-adas-0002/FP16/pedestrian-detection-adas-0002.xml"
MOT = SHARED / "mot17_dev/MOT17-mini/train"
VIDEOS = {
    "vtest": Path.home() / ".cache/privreid/data/vtest.avi",
    "intel_one_by_one": SHARED / "intel_sample_videos/one-by-one-person-detection.mp4",
    "intel_people": SHARED / "intel_sample_videos/people-detection.264",
}
AUDITORS = {"yolov8n@0.25": (YOLO, 0.25), "ssd-adas@0.5": (SSD, 0.5)}
# each video's reviewed empty scene (anonymizer.audit_scene): the audit is reported with and without it
SCENES = {
    "vtest": REPO_ROOT / "configs/audit_scenes/vtest.yml",
    "intel_one_by_one": REPO_ROOT / "configs/audit_scenes/one-by-one-person-detection.yml",
    "intel_people": REPO_ROOT / "configs/audit_scenes/people-detection.yml",
}
PERSON_AREA_CLASSES = (1, 2, 7, 8, 12)
NO_ASPECT = ("ANONYMIZER.MIN_ASPECT", "0")
OLD = ["DETECTOR.MASK_CONF", "0.25", "DETECTOR.TILES", "off", "PRIVACY.MOTION_NET", "off", *NO_ASPECT]
OLD_HOG = ["DETECTOR.HOG_UPSCALE", "1.0", "DETECTOR.HOG_WIDTH", "640"]
NO_FLOOR = ("PRIVACY.FLOOR_SSIM", "1.0", "PRIVACY.FLOOR_MIN_CHANGED", "0.0")


@dataclass(frozen=True)
class Config:
    name: str
    detector: str  # 'yolo' or 'hog'
    overrides: tuple[str, ...]
    videos: tuple[str, ...] = tuple(VIDEOS)
    anonymizer: str = "mosaic"


CONFIGS = [
    Config(
        "before: CONF 0.25, no tiles, no motion net", "yolo", tuple(OLD) + NO_FLOOR + ("PRIVACY.LOOKAHEAD_FRAMES", "0")
    ),
    Config(
        "two thresholds alone (MASK_CONF 0.05)",
        "yolo",
        (*NO_FLOOR, *NO_ASPECT, "DETECTOR.TILES", "off", "PRIVACY.MOTION_NET", "off", "PRIVACY.LOOKAHEAD_FRAMES", "0"),
    ),
    Config(
        "tiles (auto) alone",
        "yolo",
        (
            *NO_FLOOR,
            *NO_ASPECT,
            "DETECTOR.MASK_CONF",
            "0.25",
            "PRIVACY.MOTION_NET",
            "off",
            "PRIVACY.LOOKAHEAD_FRAMES",
            "0",
        ),
    ),
    Config(
        "motion net alone",
        "yolo",
        (
            *NO_FLOOR,
            *NO_ASPECT,
            "DETECTOR.MASK_CONF",
            "0.25",
            "DETECTOR.TILES",
            "off",
            "PRIVACY.MOTION_NET",
            "on",
            "PRIVACY.LOOKAHEAD_FRAMES",
            "0",
        ),
    ),
    Config("default (thresholds, tiles, motion net, look-ahead, floor)", "yolo", ()),
    Config("default without look-ahead", "yolo", ("PRIVACY.LOOKAHEAD_FRAMES", "0")),
    Config("default without the privacy floor", "yolo", NO_FLOOR),
    Config("default, learned anonymizer (auto)", "yolo", (), anonymizer="auto"),
    Config("default, learned, no aspect floor (MIN_ASPECT 0)", "yolo", NO_ASPECT, anonymizer="auto"),
    Config("default, learned, floor at SSIM 0.70", "yolo", ("PRIVACY.FLOOR_SSIM", "0.70"), anonymizer="auto"),
    Config(
        "HOG before (640 px, no motion net)",
        "hog",
        tuple(OLD[4:] + OLD_HOG) + NO_FLOOR + ("PRIVACY.LOOKAHEAD_FRAMES", "0"),
        ("vtest",),
    ),
    Config("HOG default, learned anonymizer (the README demo offline)", "hog", (), ("vtest",), "auto"),
]


def pipeline_cfg(config: Config, extra: list[str]):
    return build_config(get_pipeline_defaults(), None, ["LOG.PROGRESS", "False", *config.overrides, *extra])


def run_pipeline(cfg, detector, anonymizer, source: Path, out: Path, max_frames: int | None) -> dict[str, Any]:
    pipe = Pipeline(cfg, [CameraSpec("cam", str(source))], out, detector, anonymizer, max_frames=max_frames)
    started = time.perf_counter()
    summary = pipe.run()["cam"]
    summary["wall_fps"] = round(summary["frames"] / (time.perf_counter() - started), 2)
    if summary["error"]:
        raise RuntimeError(summary["error"])
    return summary


def replaced_area(observations: Path, shape: tuple[int, int], frames: int) -> np.ndarray:
    """Pixels the pipeline replaced in each frame: the union of its regions. (Whole-frame masks, which only
    a live camera's warm-up makes, write no region; files, as here, never have them.)"""
    area = np.zeros(frames)
    per_frame: dict[int, list[list[int]]] = {}
    for line in observations.read_text().splitlines():
        o = json.loads(line)
        if o.get("region"):
            per_frame.setdefault(o["frame_index"], []).append(o["region"])
    for index, regions in per_frame.items():
        m = np.zeros(shape, bool)
        for x1, y1, x2, y2 in regions:
            m[y1:y2, x1:x2] = True
        if index < frames:
            area[index] = m.sum()
    return area


def gt_person_area(gt_file: Path, shape: tuple[int, int], frames: int) -> np.ndarray:
    gt = np.loadtxt(gt_file, delimiter=",", ndmin=2)
    return np.array([gt_person_area_rows(gt[gt[:, 0] == index + 1], shape) for index in range(frames)], float)


CACHE = Path.home() / ".cache" / "privreid" / "bench"


def raw_persons(video: Path, auditor: str, max_frames: int | None) -> GroundTruth:
    """An independent detector's persons on the raw video, once for all configurations (boxes only,
    cached between runs under ~/.cache/privreid/bench, keyed by video size and auditor)."""
    key = f"{video.name}.{video.stat().st_size}.{auditor}.{max_frames}.json"
    cached = CACHE / key
    if cached.is_file():
        data = json.loads(cached.read_text())
        return GroundTruth(
            {int(i): [Person(tuple(b), None, s) for b, s in rows] for i, rows in data.items()},
            path=f"{auditor} on {video.name}",
        )
    persons = detect_raw_persons(video, auditor, max_frames)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({i: [[list(p.box), p.score] for p in rows] for i, rows in persons.frames.items()}))
    return persons


def detect_raw_persons(video: Path, auditor: str, max_frames: int | None) -> GroundTruth:
    model, conf = AUDITORS[auditor]
    detector = build_audit_detector(str(model), conf)
    cfg = get_pipeline_defaults()
    source = open_source(str(video), "raw", cfg.SOURCE)
    frames: dict[int, list[Person]] = {}
    chunk: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        for (i, _), d in zip(chunk, detector.detect([img for _, img in chunk]), strict=True):
            frames[i] = [Person(tuple(b), None, float(s)) for b, s in zip(d.boxes.tolist(), d.scores, strict=True)]
        chunk.clear()

    try:
        for frame in source.frames():
            if max_frames is not None and frame.index >= max_frames:
                break
            chunk.append((frame.index, frame.image))
            if len(chunk) == 8:
                flush()
        flush()
    finally:
        source.close()
    return GroundTruth(frames, path=f"{auditor} on {video.name}")


def mot_coverage(config: Config, detector, anonymizer, work: Path) -> dict[str, Any]:
    audited = protected = 0
    replaced = person_area = 0.0
    per_seq = {}
    for seq in sorted(p for p in MOT.iterdir() if p.is_dir()):
        out = work / f"mot_{seq.name}"
        summary = run_pipeline(pipeline_cfg(config, []), detector, anonymizer, seq / "img1", out, None)
        report = audit(seq / "img1", out / "cam.mp4", read_mot_gt(seq / "gt" / "gt.txt"), AuditRule())
        shape = (summary["height"], summary["width"])
        rep = replaced_area(out / "cam.observations.jsonl", shape, summary["frames"]).sum()
        gta = gt_person_area(seq / "gt" / "gt.txt", shape, summary["frames"]).sum()
        per_seq[seq.name] = {
            "audited": report["audited"],
            "protected": report["protected"],
            "misses": len(report["misses"]),
            "area_over_gt": round(rep / max(gta, 1), 3),
        }
        audited += report["audited"]
        protected += report["protected"]
        replaced += rep
        person_area += gta
    return {
        "coverage": round(protected / max(audited, 1), 4),
        "audited": audited,
        "protected": protected,
        "area_over_gt": round(replaced / max(person_area, 1), 3),
        "sequences": per_seq,
    }


def video_audits(
    config: Config,
    detector,
    anonymizer,
    work: Path,
    persons: dict[tuple[str, str], GroundTruth],
    max_frames: int | None,
    scenes: dict[str, EmptyScene],
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in config.videos:
        video = VIDEOS[name]
        out = work / f"video_{name}"
        summary = run_pipeline(pipeline_cfg(config, []), detector, anonymizer, video, out, max_frames)
        entry: dict[str, Any] = {
            "frames": summary["frames"],
            "fps": summary["wall_fps"],
            "motion_masks": summary["motion_masks"],
            "low_score_masks": summary["low_score_masks"],
            "masked_frames": summary["masked_frames"],
            "floor_masks": summary["floor_masks"],
            # persons whose protected crop went out (and could be published): the utility the floor costs
            "persons_protected": round(summary["anonymized_observations"] / max(summary["person_observations"], 1), 4),
        }
        for auditor in AUDITORS:
            report = audit(video, out / "cam.mp4", persons[(name, auditor)], AuditRule(), max_frames=max_frames)
            scene = scenes[name].fresh()
            judged = audit(video, out / "cam.mp4", persons[(name, auditor)], AuditRule(), None, max_frames, scene)
            entry[auditor] = {
                "audited": report["audited"],
                "misses": len(report["misses"]),
                "background_changed": report.get("background_changed_mean"),
                "empty_scene": {
                    "audited": judged["audited"],
                    "misses": len(judged["misses"]),
                    "set_aside": scene.set_aside,
                    "set_aside_would_leak": scene.would_leak,
                    "frames_without_scene": scene.frames_without,
                    "miss_boxes": [[m["frame"], m["box"]] for m in judged["misses"]][:20],
                },
            }
        results[name] = entry
    return results


SWEEP_CONFS = (0.01, 0.02, 0.05, 0.1, 0.25)
SWEEP_TILES = ("off", "2x2", "auto", "3x3")


def threshold_sweep() -> list[dict[str, Any]]:
    """Detector-only screen behind the defaults: MOT17 persons whose box is at least 80 % inside the
    masked regions (boxes grown by ANONYMIZER.MARGIN), per score floor and tile grid, and the
    masked area over the ground-truth person area. No video is written: it is the detector alone."""
    from anonymizer.redactor import expand_and_clip

    seqs = []
    for seq in sorted(p for p in MOT.iterdir() if p.is_dir()):
        source = open_source(str(seq / "img1"), "sweep", get_pipeline_defaults().SOURCE)
        frames = [f.image for f in source.frames()]
        source.close()
        seqs.append((frames, np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2)))
    rows = []
    for tiles in SWEEP_TILES:
        cfg = build_config(
            get_pipeline_defaults(), None, ["DETECTOR.TILES", repr(tiles), "DETECTOR.MASK_CONF", repr(min(SWEEP_CONFS))]
        )
        detector = build_detector(str(YOLO), cfg.DETECTOR)
        margin = cfg.ANONYMIZER.MARGIN
        tally = {c: [0, 0, 0.0, 0.0] for c in SWEEP_CONFS}
        started, n = time.perf_counter(), 0
        for frames, gt in seqs:
            found = detector.detect(frames)
            n += len(frames)
            for index, (frame, dets) in enumerate(zip(frames, found, strict=True)):
                h, w = frame.shape[:2]
                rows_f = gt[gt[:, 0] == index + 1]
                visible = rows_f[np.isin(rows_f[:, 7], (1, 2, 7)) & (rows_f[:, 8] >= 0.5)]
                person = gt_person_area_rows(rows_f, (h, w))
                for conf in SWEEP_CONFS:
                    masked = np.zeros((h, w), bool)
                    for box, score in zip(dets.boxes, dets.scores, strict=True):
                        if score >= conf and (r := expand_and_clip(box, margin, w, h)) is not None:
                            masked[r[1] : r[3], r[0] : r[2]] = True
                    for x, y, bw, bh in visible[:, 2:6]:
                        x1, y1, x2, y2 = max(0, int(x)), max(0, int(y)), min(w, int(x + bw)), min(h, int(y + bh))
                        share = masked[y1:y2, x1:x2].mean() if x2 > x1 and y2 > y1 else 1.0
                        tally[conf][0] += share >= 0.8
                        tally[conf][1] += 1
                    tally[conf][2] += masked.sum()
                    tally[conf][3] += person
        seconds = (time.perf_counter() - started) / max(n, 1)
        for conf, (cov, total, area, gta) in tally.items():
            rows.append(
                {
                    "tiles": tiles,
                    "mask_conf": conf,
                    "covered": int(cov),
                    "persons": int(total),
                    "area_over_gt": round(area / max(gta, 1), 3),
                    "detect_ms_per_frame": round(1000 * seconds, 1),
                }
            )
    return rows


def gt_person_area_rows(rows: np.ndarray, shape: tuple[int, int]) -> int:
    m = np.zeros(shape, bool)
    for x, y, w, h in rows[np.isin(rows[:, 7], PERSON_AREA_CLASSES)][:, 2:6]:
        m[max(0, int(y)) : max(0, int(y + h)), max(0, int(x)) : max(0, int(x + w))] = True
    return int(m.sum())


def sweep_table(rows: list[dict[str, Any]], command: str) -> list[str]:
    lines = [
        "## Score floor and tiles: the screen behind the defaults",
        "",
        f"`{command}` on {machine_line()}; YOLOv8n INT8 alone (no tracker, motion net or look-ahead) on the "
        "MOT17 dev frames; a person counts as covered when at least 80 % of its ground-truth box "
        "(classes 1, 2, 7, visibility >= 0.5) lies inside the masked regions; area = masked pixels over "
        "all ground-truth person pixels; ms per 1920x1080 or 640x480 frame for the detector.",
        "",
        "| tiles | " + " | ".join(f"MASK_CONF {c}" for c in SWEEP_CONFS) + " | detector ms/frame |",
        "| --- |" + " --- |" * (len(SWEEP_CONFS) + 1),
    ]
    for tiles in SWEEP_TILES:
        cells = [
            f"{100 * r['covered'] / r['persons']:.1f} % ({r['area_over_gt']:.2f}×)" for r in rows if r["tiles"] == tiles
        ]
        ms = next(r["detect_ms_per_frame"] for r in rows if r["tiles"] == tiles)
        lines.append(f"| {tiles} | " + " | ".join(cells) + f" | {ms} |")
    return lines


def build(config: Config):
    cfg = pipeline_cfg(config, [])
    detector = build_detector(str(YOLO) if config.detector == "yolo" else "hog", cfg.DETECTOR)
    return detector, build_anonymizer(config.anonymizer, cfg.ANONYMIZER)


def table(
    results: list[dict[str, Any]], command: str, max_frames: int | None, host: dict[str, Any] | None = None
) -> list[str]:
    """The benchmark's markdown table; rows measured with another command than ``command`` (merged
    with ``--merge``) are marked † and named with their command and machine under the table."""
    frames = f"first {max_frames} frames of each video" if max_frames else "whole videos"
    later = [r for r in results if r.get("measured", {}).get("command", command) != command]
    lines = [
        "## Privacy recall: who leaves the pipeline recognizable",
        "",
        f"`{command}` on {machine_line(host)}; {frames}; anonymizer mosaic unless the row says otherwise. Coverage: MOT17 dev persons "
        "(classes 1, 2, 7, visibility >= 0.5) unrecognizable in the output by the audit's rule "
        "(`anonymizer.audit`); area: replaced pixels over all ground-truth person pixels. Misses: persons "
        "found on the raw video by YOLOv8n@0.25 / the Intel SSD@0.5 that the output shows recognizably; in "
        "brackets the same audits judged against each video's reviewed empty scene (`configs/audit_scenes/`, "
        "`anonymizer.audit_scene`: boxes narrowed to what differs from the empty scene, detections of nothing "
        "but the scene set aside and counted in the JSON). "
        "Background: share of pixels outside person boxes changed (vtest). Persons protected: person "
        "observations of vtest whose protected crop went out (the rest solid: the privacy floor's cost). "
        "fps: whole pipeline on vtest.",
        "",
        "| configuration | MOT17 coverage (goal ≥ 99.5 %) | area / GT (goal ≤ 2) | vtest misses | "
        "Intel one-by-one misses | Intel people misses | background changed (vtest) | persons protected (vtest) | "
        "fps vtest (goal > 10) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        mot = r["mot17"]
        cells = []
        for name in VIDEOS:
            v = r["videos"].get(name)
            if not v:
                cells.append("–")
                continue
            plain = " / ".join(str(v[a]["misses"]) for a in AUDITORS)
            scene = " / ".join(str(v[a]["empty_scene"]["misses"]) if "empty_scene" in v[a] else "–" for a in AUDITORS)
            cells.append(f"{plain} ({scene})")
        vt = r["videos"].get("vtest", {})
        bg = vt.get("ssd-adas@0.5", {}).get("background_changed")
        kept = vt.get("persons_protected")
        mark = " †" if r in later else ""
        lines.append(
            f"| {r['name']}{mark} | {100 * mot['coverage']:.1f} % ({mot['protected']}/{mot['audited']}) | "
            f"{mot['area_over_gt']:.2f} | {' | '.join(cells)} | "
            f"{'–' if bg is None else f'{100 * bg:.1f} %'} | {'–' if kept is None else f'{100 * kept:.1f} %'} | "
            f"{vt.get('fps', '–')} |"
        )
    for measured in {r["measured"]["command"]: r["measured"] for r in later}.values():
        lines += ["", f"† re-measured with `{measured['command']}` on {machine_line(measured['machine'])}."]
    return lines


def figure(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    for number, r in enumerate(results):
        fps = r["videos"].get("vtest", {}).get("fps")
        if fps is None:
            continue
        # numbers on the points and names in the legend: the default rows sit on top of each other
        ax.scatter(fps, 100 * r["mot17"]["coverage"], s=50, label=f"{number}: {r['name']}")
        ax.annotate(
            str(number), (fps, 100 * r["mot17"]["coverage"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.axhline(99.5, ls="--", c="grey", lw=0.8)
    ax.axvline(10, ls=":", c="grey", lw=0.8)
    ax.set_xlabel("pipeline frames/s on vtest.avi (2-core CPU)")
    ax.set_ylabel("MOT17 dev persons unrecognizable (%)")
    ax.set_title("Coverage against speed, per configuration")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="", help="comma-separated indexes into the configuration list (default all)")
    p.add_argument("--max-frames", type=int, default=None, help="frames per video (default: whole videos)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md and the figure")
    p.add_argument("--sweep", action="store_true", help="only the detector screen of score floors and tile grids")
    p.add_argument(
        "--merge",
        action="store_true",
        help="replace only the measured rows in the existing results (e.g. after a new demo bundle); "
        "each row keeps the machine and command it was measured with, and the table marks the newer ones",
    )
    args = p.parse_args(argv)
    command = command_line("privacy_recall.py", argv if argv is not None else sys.argv[1:])
    if args.sweep:
        rows = threshold_sweep()
        save_json("privacy_recall_sweep", {"command": command, "rows": rows})
        if not args.no_doc:
            publish_table("privacy_recall_sweep", sweep_table(rows, command))
        return 0
    missing = [str(x) for x in (YOLO, SSD, MOT, *VIDEOS.values(), *SCENES.values()) if not x.exists()]
    if missing:
        print(f"missing inputs: {missing}", file=sys.stderr)
        return 2
    configs = [CONFIGS[int(i)] for i in args.configs.split(",")] if args.configs else CONFIGS
    wanted = {v for c in configs for v in c.videos}
    persons = {
        (v, a): raw_persons(VIDEOS[v], a, args.max_frames)
        for v in tqdm(sorted(wanted), desc="independent detectors on raw videos")
        for a in AUDITORS
    }
    scenes = {v: read_empty_scene(SCENES[v], VIDEOS[v]) for v in sorted(wanted)}
    for v, scene in scenes.items():
        build_empty_scene(VIDEOS[v], scene)
    results = []
    for config in tqdm(configs, desc="configurations"):
        detector, anonymizer = build(config)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            entry = {
                "name": config.name,
                "detector": detector.name,
                "anonymizer": anonymizer.kind,
                "overrides": list(config.overrides),
                "mot17": mot_coverage(config, detector, anonymizer, work),
                "videos": video_audits(config, detector, anonymizer, work, persons, args.max_frames, scenes),
            }
        entry["measured"] = {"command": command, "machine": machine()}
        results.append(entry)
        print(json.dumps(entry), flush=True)
    first = {"command": command, "machine": machine(), "max_frames": args.max_frames}
    if args.merge:
        results, first = merged_results(RESULTS_DIR / "privacy_recall.json", results, args.max_frames)
    save_json(
        "privacy_recall",
        {
            "command": first["command"],
            "max_frames": args.max_frames,
            "rule": AuditRule().describe(),
            "auditors": {k: [Path(m).name, c] for k, (m, c) in AUDITORS.items()},
            "results": results,
        },
    )
    if not args.no_doc:
        publish_table("privacy_recall", table(results, first["command"], args.max_frames, first["machine"]))
        figure(results, REPO_ROOT / "docs" / "figures" / "privacy_recall.png")
    return 0


def merged_results(
    path: Path, fresh: list[dict[str, Any]], max_frames: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The earlier results at ``path`` with the ``fresh`` rows replacing those of the same name, in the
    order of :data:`CONFIGS`, and the earlier run's command and machine (the table's caption).

    Why: a change that touches a few rows (a new demo bundle moves only the learned-anonymizer rows)
    should not cost a re-run of every configuration, and a row must not pass for having been
    measured on the machine and with the command of the others.
    """
    if not path.is_file():
        raise SystemExit(f"--merge: no earlier results at {path}")
    earlier = json.loads(path.read_text())
    if earlier.get("max_frames") != max_frames:
        raise SystemExit(
            f"--merge: the earlier results used --max-frames {earlier.get('max_frames')}, not {max_frames}"
        )
    first = {"command": earlier["command"], "machine": earlier.get("machine") or {}}
    rows = {r["name"]: {"measured": first, **r} for r in earlier["results"]}
    rows.update({r["name"]: r for r in fresh})
    order = [c.name for c in CONFIGS]
    merged = sorted(rows.values(), key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    return merged, first


if __name__ == "__main__":
    sys.exit(main())
