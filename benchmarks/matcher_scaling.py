"""Matcher time per observation for galleries of 1k, 10k and 100k tracks (reid/gallery.py, no Kafka).

    python benchmarks/matcher_scaling.py [--sizes 1000,10000,100000] [--dim 512] [--queries 200]

Two kinds of observation: a **new track** (the gallery decides its identity: one matrix-vector
product over all tracks plus a few linear passes) and an **update** of a known track (running
mean, duplicate and overlap checks: constant time). Galleries are filled with synthetic unit
embeddings, 4 tracks per identity, spread over 16 cameras.
Writes ``benchmarks/results/matcher_scaling.json`` and a section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os

# What `python -m reid.service` uses (see there); pass --blas-threads to compare.
_threads = next((a.split("=", 1)[1] for a in __import__("sys").argv if a.startswith("--blas-threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _threads)

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.kafka_common import command_line, machine_line, publish_table, save_json, unit_vectors  # noqa: E402
from reid.gallery import Gallery  # noqa: E402


def build(n: int, dim: int, rng: np.random.Generator) -> tuple[Gallery, np.ndarray]:
    people = unit_vectors(max(1, n // 4), dim, seed=1)
    g = Gallery(dim, threshold=0.65, initial_capacity=n + 4096)
    for i in range(n):
        p = i // 4
        v = people[p] + 0.3 / np.sqrt(dim) * rng.normal(size=dim).astype(np.float32)
        g.add_track(
            (f"cam{i % 16}", "s", i), v / np.linalg.norm(v), first_ms=i * 10, last_ms=i * 10 + 5, global_id=p + 1
        )
    return g, people


def measure(n: int, dim: int, queries: int, rng: np.random.Generator) -> dict:
    t0 = time.perf_counter()
    g, people = build(n, dim, rng)
    build_s = time.perf_counter() - t0
    ts = n * 10 + 1_000_000
    new_us, upd_us = [], []
    for q in range(queries):
        p = int(rng.integers(len(people)))
        v = people[p] + 0.3 / np.sqrt(dim) * rng.normal(size=dim).astype(np.float32)
        v /= np.linalg.norm(v)
        t = time.perf_counter()
        g.observe("camX", "s", 10_000_000 + q, 0, ts + q, v)  # new track: identity decision
        new_us.append((time.perf_counter() - t) * 1e6)
    for q in range(queries * 5):
        key = int(rng.integers(n))
        v = people[key // 4]
        t = time.perf_counter()
        g.observe(f"cam{key % 16}", "s", key, 1 + q, ts + q, v)  # known track: update
        upd_us.append((time.perf_counter() - t) * 1e6)
    return {
        "tracks": n,
        "dim": dim,
        "build_s": round(build_s, 2),
        "new_track_us_p50": round(statistics.median(new_us), 1),
        "new_track_us_p95": round(float(np.percentile(new_us, 95)), 1),
        "update_us_p50": round(statistics.median(upd_us), 1),
        "update_us_p95": round(float(np.percentile(upd_us, 95)), 1),
        "gallery_mb": round(g._mean.nbytes / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument(
        "--blas-threads", default="1", help="BLAS threads, as --blas-threads=N (default 1, like the service)"
    )
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    line = machine_line()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        r = measure(n, args.dim, args.queries, rng)
        rows.append(r)
        print(r)
    cmd = command_line("matcher_scaling.py", sys.argv[1:])
    save_json("matcher_scaling", {"command": cmd, "rows": rows})
    table = [
        "## Matcher time per observation",
        "",
        f"`{cmd}` on {line}; numpy float32 (BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS')}), the service loop's thread, {args.queries} new tracks and "
        f"{args.queries * 5} updates per size, {args.dim}-d embeddings.",
        "",
        "| gallery tracks | new track p50 (ms) | new track p95 (ms) | update p50 (µs) | update p95 (µs) | embeddings (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        table.append(
            f"| {r['tracks']:,} | {r['new_track_us_p50'] / 1000:.2f} | {r['new_track_us_p95'] / 1000:.2f} | "
            f"{r['update_us_p50']:.0f} | {r['update_us_p95']:.0f} | {r['gallery_mb']} |"
        )
    publish_table("matcher_scaling", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
