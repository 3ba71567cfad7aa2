"""Shared by the benchmarks: machine description, JSON results, and sections of docs/benchmarks.md."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DOC = REPO_ROOT / "docs" / "benchmarks.md"
DOC_HEADER = (
    "# Benchmarks\n\nEvery table below is written by the script named in its section, "
    "with the command, the machine and the date; raw numbers are in `benchmarks/results/`.\n"
)


#: instruction sets that decide the speed of INT8 and float inference on a CPU
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine() -> dict[str, Any]:
    """What the numbers ran on: CPU model (with family / model and the vector instruction sets: a VM
    that only says "AMD EPYC" hid a 2.5× difference in INT8 detector speed between two hosts), cores,
    load, library versions, GPU if any."""
    first: dict[str, str] = {}  # the first CPU's lines (all CPUs of a VM are alike)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            first.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = first.get("model name") or platform.processor() or ""
    family, model, flags = first.get("cpu family", ""), first.get("model", ""), set(first.get("flags", "").split())
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_family_model": f"{family}/{model}" if family else "",
        "isa": [f for f in _ISA_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    for lib in ("openvino", "onnxruntime"):
        try:
            info[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def machine_line(m: dict[str, Any] | None = None) -> str:
    """The machine (this one, or one recorded by :func:`machine`) in one line of a table's caption:
    numbers mean little without it."""
    m = m if m is not None else machine()
    isa = ", ".join(m.get("isa") or []) or "no AVX2"
    family = f" family/model {m['cpu_family_model']}" if m.get("cpu_family_model") else ""
    return f"{m['cpu']}{family} ({isa}; {m['cores']} cores, load {m['load_avg_1m']} at the start), Python {m['python']}"


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that produced a table, quoted so that it can be pasted back into a shell."""
    return f"python benchmarks/{script} {shlex.join(argv)}".strip()


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return "unknown"


def save_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {
        "benchmark": name,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def update_doc_section(name: str, markdown: str, doc: Path = DOC) -> None:
    """Replace (or append) the section between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    text = doc.read_text() if doc.exists() else DOC_HEADER
    block = f"<!-- BEGIN {name} -->\n{markdown.rstrip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def publish_table(name: str, lines: Sequence[str], doc: Path = DOC) -> str:
    """Write ``lines`` as the section ``name`` of docs/benchmarks.md, print it and return it."""
    markdown = "\n".join(lines)
    update_doc_section(name, markdown, doc)
    print(markdown)
    return markdown
