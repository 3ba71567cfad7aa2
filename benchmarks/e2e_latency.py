"""End-to-end latency: capture timestamp of an observation -> its match event emitted by the service.

    python benchmarks/e2e_latency.py [--scenarios 100:1,100:25,1000:25] [--seconds 8] [--dim 512]

Runs the embedded broker, one matching service (in a thread of this process) and a publisher
paced at each rate. A scenario ``RATE:N`` publishes RATE observations/s in tracks of N
observations; the first observation of a track gets the identity decision and its event (N = 1
is the worst case: every observation is matched against the whole gallery). Latency =
``emitted_at_ms`` of the event minus the observation's ``timestamp_ms`` (stamped with the wall clock
when "captured"), so it includes the producer's batching (``LINGER_MS``), the broker, the
consumer's fetch and the matching itself.
Writes ``benchmarks/results/e2e_latency.json`` and a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # as `python -m reid.service` does

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kafka_common import FP_ANON, FP_REID, command_line, machine_line, publish_table, save_json, unit_vectors  # noqa: E402
from configs import build_config  # noqa: E402
from configs.service_defaults import get_service_defaults  # noqa: E402
from reid.service import MatchingService  # noqa: E402
from stream.broker import EmbeddedBroker  # noqa: E402
from stream.publisher import FeaturePublisher  # noqa: E402


def run_rate(bootstrap: str, rate: int, per_track: int, seconds: float, dim: int, tmp: Path) -> dict:
    topic = f"lat-{rate}-{time.monotonic_ns()}"
    out = tmp / f"{topic}.jsonl"
    cfg = build_config(
        get_service_defaults(),
        None,
        [
            "TOPIC",
            repr(topic),
            "GROUP",
            repr(f"g-{topic}"),
            "OUTPUT_TOPIC",
            repr(f"{topic}.matches"),
            "OUT",
            repr(str(out)),
            "STATE.SNAPSHOT_DIR",
            repr(str(tmp / topic)),
            "KAFKA.MAX_POLL_INTERVAL_MS",
            "3000",
            "KAFKA.HEARTBEAT_INTERVAL_MS",
            "500",
            "KAFKA.SESSION_TIMEOUT_MS",
            "6000",
            "MATCHER.REID_FINGERPRINT",
            repr(FP_REID),
            "MATCHER.EMBEDDING_DIM",
            str(dim),
        ],
    )
    pub = FeaturePublisher.from_config({"TOPIC": topic}, bootstrap=bootstrap, spool_dir=tmp / f"{topic}-spool")
    # Create the topic and let the service join the group before the clock starts.
    pub.publish(
        "warm", 0, int(time.time() * 1000), 0, (0, 0, 1, 1), 0.5, unit_vectors(1, dim)[0], FP_REID, FP_ANON, "mosaic"
    )
    pub.flush(10)
    service = MatchingService(bootstrap, cfg)
    summary: dict = {}
    thread = threading.Thread(target=lambda: summary.update(service.run()), daemon=True)
    thread.start()
    if not service.wait_idle(60):
        raise RuntimeError("the matching service did not start")
    embs = unit_vectors(512, dim, seed=rate)
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        track = 1 + i // (4 * per_track) * 4 + i % 4  # 4 cameras, each track lasts per_track frames
        pub.publish(
            f"cam{i % 4}",
            i,
            int(time.time() * 1000),
            track,
            (0, 0, 60, 160),
            0.8,
            embs[(track * 7) % 512],
            FP_REID,
            FP_ANON,
            "mosaic",
        )
    achieved = n / (time.perf_counter() - start)
    pub.flush(30)
    service.wait_idle(60)
    service.stop()
    thread.join(30)
    pub.close()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    lat = np.array([e["emitted_at_ms"] - e["timestamp_ms"] for e in events if e["camera_id"] != "warm"])
    return {
        "rate_target": rate,
        "observations_per_track": per_track,
        "rate_achieved": round(achieved, 1),
        "observations": n,
        "events": int(lat.size),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "max_ms": float(lat.max()),
        "gallery_tracks_at_end": summary.get("tracks"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default="100:1,100:25,1000:25", help="RATE:OBSERVATIONS_PER_TRACK,...")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--dim", type=int, default=512)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    line = machine_line()
    rows = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios.split(","):
            rate, per_track = (int(x) for x in scenario.split(":"))
            r = run_rate(broker.bootstrap, rate, per_track, args.seconds, args.dim, Path(tmp))
            rows.append(r)
            print(r)
    cmd = command_line("e2e_latency.py", sys.argv[1:])
    save_json("e2e_latency", {"command": cmd, "rows": rows})
    table = [
        "## End-to-end latency: capture -> match event",
        "",
        f"`{cmd}` on {line}; embedded broker, publisher (`LINGER_MS` 20, gzip), one matching service, all in "
        f"one process on the same 2 cores; 4 cameras, {args.dim}-d float16, {args.seconds:g} s per scenario; latency of "
        f"every match event (one per track).",
        "",
        "| observations/s (target / achieved) | observations per track | events | p50 (ms) | p95 (ms) | max (ms) | tracks at the end |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['rate_target']} / {r['rate_achieved']:.0f} | {r['observations_per_track']} | {r['events']} | {r['p50_ms']:.0f} | "
            f"{r['p95_ms']:.0f} | {r['max_ms']:.0f} | {r['gallery_tracks_at_end']} |"
        )
    publish_table("e2e_latency", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
