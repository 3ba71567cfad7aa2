"""How much does the video codec cost recovery quality? (learned anonymizer)

Pastes protected CUHK01 *test* crops into frames of a real video, encodes the frames the way the
pipeline does (ffmpeg libx264 CRF 20 yuv420p, or OpenCV mp4v), decodes them, recovers each region
with G_R and compares with the raw crop. The same regions are also recovered from the lossless
sidecar (native G output, or the region-size protected crop), which isolates the codec's share.

    python -m benchmarks.recovery_codec --bundle models/demo --key-file KEY --out /work/runs/codec

Outputs (JSON and a table on stdout) go to --out, which must be outside the repository: the
videos show research-only person images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from anonymizer import load_bundle, load_recovery
from anonymizer.image_metrics import set_metrics_uint8
from stream.sinks import raw_bgr_input

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SLOTS = 4  # people per frame


def test_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """The first ``n`` CUHK01 test images (identities never seen in training), BGR."""
    from reid.datasets import load_dataset

    ds = load_dataset(SHARED, "cuhk01", split_seed=seed, val_fraction=0.0)
    return [cv2.imread(p) for p, _, _ in (ds.query + ds.gallery)[:n]]


def backgrounds(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(SHARED / "intel_sample_videos" / "one-by-one-person-detection.mp4"))
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    if not frames:
        frames = [np.full((432, 768, 3), 90, np.uint8)]
    return [frames[i % len(frames)].copy() for i in range(n)]


def encode(frames: list[np.ndarray], path: Path, codec: str) -> Path:
    h, w = frames[0].shape[:2]
    if codec == "x264":
        cmd = [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            *raw_bgr_input(w, h, "25"),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ]
        subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)
    else:
        wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
        for f in frames:
            wr.write(f)
        wr.release()
    return path


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--out", required=True, help="output folder outside the repository")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--scale", type=float, default=1.5, help="region size = scale × the 160×60 crop")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    if REPO in out.parents or out == REPO:
        print("error: --out must be outside the repository (the videos show people)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)

    bundle = load_bundle(args.bundle)
    rec = load_recovery(args.bundle, args.key_file)
    crops = test_crops(args.images)
    rh, rw = int(round(160 * args.scale)), int(round(60 * args.scale))
    raws = [cv2.resize(c, (rw, rh), interpolation=cv2.INTER_LINEAR) for c in crops]
    batch = bundle.protect_batch(raws)
    prot = batch.released
    # the key holder's native crops: a scrambling bundle's are opened with their sealed seeds first
    native = [
        rec.unscrambler.restore(n, s) if s is not None and rec.unscrambler is not None else n
        for n, s in zip(batch.native, batch.sealed, strict=True)
    ]
    n_frames = (len(raws) + SLOTS - 1) // SLOTS
    frames = backgrounds(n_frames)
    H, W = frames[0].shape[:2]
    xs = [int(W * (i + 0.5) / SLOTS - rw / 2) for i in range(SLOTS)]
    y = max(0, (H - rh) // 2)
    regions = []
    for i, p in enumerate(prot):
        f, s = divmod(i, SLOTS)
        frames[f][y : y + rh, xs[s] : xs[s] + rw] = p
        regions.append((f, xs[s], y))

    results: dict[str, dict] = {
        "(raw, protected) region": set_metrics_uint8(zip(raws, prot, strict=True)),
        "recovered from native sidecar": set_metrics_uint8(
            zip(raws, [cv2.resize(r, (rw, rh)) for r in rec.recover(native)], strict=True)
        ),
        "recovered from lossless region crop": set_metrics_uint8(zip(raws, rec.recover(prot), strict=True)),
    }
    codecs = ["mp4v"] + (["x264"] if shutil.which("ffmpeg") else [])
    for codec in codecs:
        path = encode(frames, out / f"protected_{codec}.mp4", codec)
        dec = decode(path)
        got = [dec[f][y0 : y0 + rh, x0 : x0 + rw] for f, x0, y0 in regions]
        results[f"(raw, protected) after {codec}"] = set_metrics_uint8(zip(raws, got, strict=True))
        results[f"recovered from video ({codec}{' CRF 20' if codec == 'x264' else ''})"] = set_metrics_uint8(
            zip(raws, rec.recover(got), strict=True)
        )
        results[f"size of {codec} video (bytes)"] = {"bytes": path.stat().st_size}
    report = {
        "bundle": str(Path(args.bundle).resolve()),
        "images": len(raws),
        "region_hw": [rh, rw],
        "frame_hw": [H, W],
        "results": results,
    }
    (out / "recovery_codec.json").write_text(json.dumps(report, indent=2))
    print(f"{'case':<48}{'PSNR':>8}{'SSIM':>8}")
    for k, v in results.items():
        if "psnr" in v:
            print(f"{k:<48}{v['psnr']:>8.2f}{v['ssim']:>8.3f}")
    print(f"wrote {out / 'recovery_codec.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
