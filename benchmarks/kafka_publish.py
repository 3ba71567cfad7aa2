"""Publish throughput of :class:`stream.publisher.FeaturePublisher` to the embedded loopback broker.

    python benchmarks/kafka_publish.py [--observations 20000] [--dim 512] [--compression gzip,lz4,none]

For each setting: ``publish()`` calls per second in the caller's thread (what the pipeline feels)
and delivered observations per second (publish + flush until the broker acknowledged every one,
``acks=all``, idempotent). Goal: ≥ 5,000 observations/s for 512-d float16 embeddings.
Writes ``benchmarks/results/kafka_publish.json`` and a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kafka_common import FP_ANON, FP_REID, command_line, machine_line, publish_table, save_json, unit_vectors  # noqa: E402
from stream.broker import EmbeddedBroker  # noqa: E402
from stream.publisher import FeaturePublisher  # noqa: E402
from transport.kafka_io import KafkaConfigError, compression_type  # noqa: E402
from transport.schema import build_message, encode_message  # noqa: E402

GOAL = 5000.0


def run_one(bootstrap: str, n: int, dim: int, dtype: str, compression: str, cameras: int) -> dict:
    embs = unit_vectors(256, dim)
    topic = f"bench-{compression}-{dtype}-{time.monotonic_ns()}"
    with tempfile.TemporaryDirectory() as spool:
        pub = FeaturePublisher.from_config(
            {"TOPIC": topic, "COMPRESSION": compression, "EMBEDDING_DTYPE": dtype}, bootstrap=bootstrap, spool_dir=spool
        )
        t0 = time.perf_counter()
        for i in range(n):
            pub.publish(
                f"cam{i % cameras}",
                i // cameras,
                1_700_000_000_000 + 40 * (i // cameras),
                (i // cameras) // 25,
                (10.0, 20.0, 74.0, 220.0),
                0.8,
                embs[i % 256],
                FP_REID,
                FP_ANON,
                "mosaic",
            )
        t_publish = time.perf_counter() - t0
        ok = pub.flush(120)
        t_total = time.perf_counter() - t0
        stats = pub.stats
        pub.close()
    size = len(
        encode_message(
            build_message(
                camera_id="cam0",
                session_id="0" * 32,
                frame_index=1,
                timestamp_ms=1,
                track_id=1,
                box=(1, 2, 3, 4),
                score=0.5,
                embedding=embs[0],
                reid_fingerprint=FP_REID,
                anonymizer_fingerprint=FP_ANON,
                anonymization="mosaic",
                embedding_dtype=dtype,
            )
        )
    )
    return {
        "compression": compression,
        "dtype": dtype,
        "dim": dim,
        "observations": n,
        "message_bytes": size,
        "publish_calls_per_s": round(n / t_publish, 1),
        "delivered_per_s": round(n / t_total, 1),
        "delivered_mb_per_s": round(n * size / t_total / 1e6, 2),
        "all_acknowledged": ok,
        "delivered": stats["delivered"],
        "spooled": stats["spooled"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--observations", type=int, default=20000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--compression", default="gzip,lz4,none", help="comma-separated KAFKA.COMPRESSION values")
    p.add_argument("--float32", action="store_true", help="also measure float32 embeddings with the first codec")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    settings = []
    for codec in args.compression.split(","):
        try:
            compression_type(codec)
        except KafkaConfigError as exc:
            print(f"skipping {codec}: {exc}")
            continue
        settings.append((codec, "float16"))
    if args.float32 and settings:
        settings.append((settings[0][0], "float32"))
    line = machine_line()
    rows = []
    with EmbeddedBroker() as broker:
        for codec, dtype in settings:
            r = run_one(broker.bootstrap, args.observations, args.dim, dtype, codec, args.cameras)
            rows.append(r)
            print(r)
    cmd = command_line("kafka_publish.py", sys.argv[1:])
    save_json("kafka_publish", {"command": cmd, "goal_obs_per_s": GOAL, "rows": rows})
    table = [
        "## Kafka publish throughput",
        "",
        f"`{cmd}` on {line}; embedded tansu broker on loopback, `acks=all`, idempotent producer, "
        f"{args.observations} observations over {args.cameras} cameras, {args.dim}-d embeddings.",
        "",
        "| compression | embedding | message bytes | publish() calls/s | delivered obs/s (acked) | MB/s | goal ≥ 5,000 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mark = "✅" if r["delivered_per_s"] >= GOAL else "❌"
        table.append(
            f"| {r['compression']} | {r['dtype']} | {r['message_bytes']} | {r['publish_calls_per_s']:.0f} | "
            f"{r['delivered_per_s']:.0f} | {r['delivered_mb_per_s']} | {mark if r['dtype'] == 'float16' else ''} |"
        )
    publish_table("kafka_publish", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
