"""Shared by the Kafka benchmarks: the report helpers (from :mod:`benchmarks.report`) and synthetic,
contract-valid inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import command_line, machine_line, publish_table, save_json  # noqa: E402,F401

FP_REID, FP_ANON = "5a" * 32, "6b" * 32


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
