"""The privacy-utility figure reads finished runs and refuses what it cannot plot, with a reason."""

from __future__ import annotations

import json

from training.privacy_utility import main


def _run(folder, rank1, image=None):
    folder.mkdir(parents=True)
    m = {"results": {"raw->protected": {"rank1": rank1}}}
    if image:
        m["image_metrics"] = image
    (folder / "metrics.json").write_text(json.dumps(m))
    return folder


def test_figure_and_points_are_written(tmp_path, capsys):
    base = _run(tmp_path / "base", 0.21)
    gcr = _run(
        tmp_path / "gcr",
        0.17,
        {"raw_desensitized": {"psnr": 17.5, "ssim": 0.46}, "raw_protected": {"psnr": 17.9, "ssim": 0.508}},
    )
    out = tmp_path / "fig" / "pu.png"
    assert main(["--run", f"Base={base}", "--run", f"w/o={gcr}", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = json.loads(out.with_suffix(".json").read_text())["points"]
    assert [(p["label"], p["ssim_op"]) for p in points] == [("Base", None), ("w/o", 0.508)]


def test_bad_arguments_fail_with_a_reason(tmp_path, capsys):
    base = _run(tmp_path / "base", 0.21)
    assert main(["--run", str(base), "--out", str(tmp_path / "a.png")]) == 2
    assert "LABEL=RUN_DIR" in capsys.readouterr().err
    assert main(["--run", f"Base={base}", "--out", str(tmp_path / "b.png")]) == 2  # no GCR run: no SSIM(O,M)
    assert "SSIM(O,M)" in capsys.readouterr().err
    assert main(["--run", f"x={tmp_path / 'missing'}", "--out", str(tmp_path / "c.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_labels_of_nearby_points_go_to_different_sides():
    from training.privacy_utility import label_offsets

    # two runs close together (axes fractions), a third far away
    offsets = label_offsets([0.50, 0.51, 0.1], [0.90, 0.89, 0.2], ["blur-skip w/o", "full, margin 0.3", "Base"])
    assert offsets[0] != offsets[1]
    assert offsets[2] == offsets[0]  # a lone point keeps the default place
