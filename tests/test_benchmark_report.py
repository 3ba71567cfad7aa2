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
