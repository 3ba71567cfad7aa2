"""The benchmarks' report helpers: a rerun replaces its own section of docs/benchmarks.md and nothing else."""

from __future__ import annotations

from benchmarks.report import command_line, publish_table


def test_a_rerun_replaces_only_its_own_section(tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    publish_table("a", ["## A", "old a"], doc)
    publish_table("b", ["## B", "b"], doc)
    publish_table("a", ["## A", "new a"], doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert "new a" in text and "old a" not in text and text.count("<!-- BEGIN a -->") == 1
    assert text.index("BEGIN a") < text.index("BEGIN b")  # kept in place, not moved to the end
    assert "## B\nb" in text and "new a" in capsys.readouterr().out


def test_the_command_can_be_pasted_back_into_a_shell():
    assert command_line("x.py", []) == "python benchmarks/x.py"
    assert (
        command_line("x.py", ["--sizes", "1,2", "MODEL.NAME", "a b"])
        == "python benchmarks/x.py --sizes 1,2 MODEL.NAME 'a b'"
    )


def test_merged_privacy_recall_rows_keep_their_own_command_and_machine(tmp_path):
    import json

    import pytest

    from benchmarks.privacy_recall import AUDITORS, CONFIGS, merged_results, table

    def row(i: int, fps: float, measured: dict | None = None) -> dict:
        audits = {a: {"misses": 0, "background_changed": 0.01} for a in AUDITORS}
        r = {
            "name": CONFIGS[i].name,
            "mot17": {"coverage": 1.0, "protected": 3, "audited": 3, "area_over_gt": 1.5},
            "videos": {"vtest": {"fps": fps, **audits}},
        }
        return {**r, "measured": measured} if measured else r

    old_host = {"cpu": "Old CPU", "isa": [], "cores": 2, "load_avg_1m": 0.5, "python": "3.11"}
    new_host = {**old_host, "cpu": "New CPU"}
    path = tmp_path / "privacy_recall.json"
    earlier = {"command": "python benchmarks/privacy_recall.py", "machine": old_host, "max_frames": None}
    path.write_text(json.dumps({**earlier, "results": [row(2, 30.0), row(0, 20.0), row(1, 25.0)]}))
    fresh = [row(1, 99.0, {"command": "python benchmarks/privacy_recall.py --configs 1 --merge", "machine": new_host})]

    merged, first = merged_results(path, fresh, None)
    assert [r["name"] for r in merged] == [CONFIGS[i].name for i in (0, 1, 2)]  # the benchmark's own order
    assert [r["videos"]["vtest"]["fps"] for r in merged] == [20.0, 99.0, 30.0]  # only row 1 replaced
    lines = table(merged, first["command"], None, first["machine"])
    assert "Old CPU" in lines[2]
    marked = [line for line in lines if line.startswith("| ") and " †" in line]
    assert len(marked) == 1 and CONFIGS[1].name in marked[0]
    assert lines[-1].startswith("† re-measured with `python benchmarks/privacy_recall.py --configs 1 --merge`")
    assert "on New CPU" in lines[-1]
    with pytest.raises(SystemExit, match="max-frames"):
        merged_results(path, fresh, 10)
    with pytest.raises(SystemExit, match="no earlier results"):
        merged_results(tmp_path / "none.json", fresh, None)
