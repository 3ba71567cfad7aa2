"""The one ``privreid`` command dispatches to every job's own CLI (the ``python -m`` forms stay)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from privreid.cli import SUBCOMMANDS
from tests.conftest import REPO_ROOT


def _privreid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "privreid", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def test_help_lists_every_subcommand():
    proc = _privreid("--help")
    assert proc.returncode == 0
    assert all(name in proc.stdout for name in SUBCOMMANDS)


@pytest.mark.parametrize(
    "name,flag",
    [
        ("export", "--sign-key"),
        ("run", "--trusted-keys"),
        ("recover", "--key-file"),
        ("sign", "keygen"),
        ("audit", "--anonymized"),
        ("evaluate-privacy", "--attacker-reid"),
    ],
)
def test_subcommand_help_is_the_jobs_own(name, flag):
    proc = _privreid(name, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert flag in proc.stdout


def test_unknown_subcommand_exits_2():
    proc = _privreid("frobnicate")
    assert proc.returncode == 2 and "unknown subcommand" in proc.stderr


def test_bench_without_a_name_lists_the_benchmarks():
    proc = _privreid("bench")
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = proc.stdout
    assert "pipeline_fps" in listed and "matcher_scaling" in listed
    assert "report " not in listed and "kafka_common" not in listed  # helpers are not benchmarks


def test_bench_help_is_the_benchmarks_own_and_unknown_names_exit_2():
    proc = _privreid("bench", "matcher-scaling", "--help")  # '-' or '_' both name the module
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--sizes" in proc.stdout and "privreid bench matcher_scaling" in proc.stdout
    proc = _privreid("bench", "no_such_benchmark")
    assert proc.returncode == 2 and "unknown benchmark" in proc.stderr


def test_bench_outside_a_checkout_says_so(monkeypatch, tmp_path, capsys):
    import privreid.bench as bench

    monkeypatch.setattr(bench, "PACKAGES_ROOT", tmp_path)  # an installed wheel: no benchmarks/ beside the packages
    assert bench.main(["pipeline_fps"]) == 2
    assert "checkout" in capsys.readouterr().err
