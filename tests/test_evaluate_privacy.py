"""The privacy evaluation harness (``python -m anonymizer.evaluate_privacy``): runs end to end on a few
real CUHK01 identities with the demo bundle, can tell a leak from a protection, and rejects bad input
with exit status 2 and the flag's name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anonymizer.evaluate_privacy import main
from anonymizer.privacy_data import parse_baseline
from anonymizer.privacy_report import BEGIN, END, write_markdown

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BUNDLE = REPO / "models" / "demo"
ATTACKER = DATA / "reid_models" / "boxmot_export" / "osnet_x0_25_msmt17.onnx"

needs_data = pytest.mark.skipif(
    not ((DATA / "cuhk01" / "index.csv").is_file() and ATTACKER.is_file() and (BUNDLE / "bundle.yaml").is_file()),
    reason="needs ../shared/data (CUHK01, the OSNet attackers, the face detector) and models/demo",
)

# 10 identities: 20 queries, 20 gallery images; budgets of a few iterations keep the run ~25 s
QUICK = [
    "--bundle",
    str(BUNDLE),
    "--dataset",
    "cuhk01",
    "--root",
    str(DATA),
    "--max-ids",
    "10",
    "--max-train-ids",
    "24",
    "--adaptive-iters",
    "2",
    "--adaptive-batch",
    "8",
    "--recovery-iters",
    "3",
    "--recovery-batch",
    "8",
    "--threads",
    "1",
    "--baselines",
    "mosaic:24",
    "none",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, Path]:
    if not ((DATA / "cuhk01" / "index.csv").is_file() and ATTACKER.is_file()):
        pytest.skip("needs ../shared/data")
    out = tmp_path_factory.mktemp("privacy")
    md = out / "page.md"
    md.write_text("# Privacy\n\nhand-written text\n")
    assert main([*QUICK, "--out", str(out / "eval"), "--markdown", str(md)]) == 0
    return json.loads((out / "eval" / "privacy.json").read_text()), out


@needs_data
def test_end_to_end_writes_every_section(quick_run) -> None:
    result, out = quick_run
    s = result["settings"]
    assert s["split"] == {
        "test_identities": 10,
        "queries": 20,
        "gallery": 20,
        "train_identities": 24,
        "train_images": 96,
    }
    assert s["split_seed"] == 0 and s["work_size_hw"] == [128, 64]
    assert [a["name"] for a in s["attackers"]] == [
        "boxmot_export/osnet_x0_25_msmt17",
        "torchreid_export/osnet_x0_25_msmt17",
    ]
    assert s["face_detector"]["threshold"] == 0.7 and "placement" in s["face_detector"]
    assert set(result["protections"]) == {"learned", "mosaic:24", "none"}
    for name, row in result["protections"].items():
        assert set(row["authorized"]) == {"raw->raw", "raw->protected", "protected->raw", "protected->protected"}
        for attacker in row["attackers"].values():
            assert set(attacker) == {"raw->protected", "protected->protected"}
        assert {"raw->raw", "raw->protected", "protected->protected", "train"} <= set(row["adaptive"])
        assert row["adaptive"]["train"]["iters"] == 2
        assert {"psnr", "ssim"} <= set(row["recovery_attack"]) and row["recovery_attack"]["train"]["iters"] == 3
        # the generic decoder always runs; on the demo bundle (a mosaic G that writes a payload, then
        # scrambled), also a reader of G's public payload spec and a decoder of each block's sorted pixels
        candidates = list(row["recovery_attack"]["candidates"])
        assert candidates[0] == "residual U-Net"
        if name == "learned":
            assert len(candidates) == 3 and any("payload reader" in c for c in candidates)
        else:
            assert candidates == ["residual U-Net"]
        assert {"psnr", "ssim"} <= set(row["pixel"]) and 0 <= row["face"]["face_rate"] <= 1
        assert row["key_holder"]["measured"] is False
        for metrics in row["authorized"].values():
            assert 0.0 <= metrics["rank1"] <= 1.0 and 0.0 <= metrics["mAP"] <= 1.0 and metrics["num_queries"] == 20
    assert result["protections"]["learned"]["key_holder"]["note"] == "not measured (no key)"
    # the same raw→raw reference in every row: raw features are computed once
    raw = result["reference"]["authorized"]["raw->raw"]["rank1"]
    assert all(r["authorized"]["raw->raw"]["rank1"] == raw for r in result["protections"].values())
    assert {"load", "reference", "learned", "total"} <= set(result["timings_s"])
    # outputs: numbers, table, figure; the hand-written page keeps its text and gains the section
    assert (out / "eval" / "privacy_utility.png").stat().st_size > 5000
    assert "| learned |" in (out / "eval" / "privacy.md").read_text()
    page = (out / "page.md").read_text()
    assert page.startswith("# Privacy\n\nhand-written text\n") and BEGIN in page and END in page
    # no image file anywhere in the output
    assert not [p for p in out.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".bmp", ".npy", ".npz")]
    assert [p.name for p in out.rglob("*.png")] == ["privacy_utility.png"]


@needs_data
def test_the_harness_tells_a_leak_from_a_protection(quick_run) -> None:
    rows = quick_run[0]["protections"]
    leak, mosaic = rows["none"], rows["mosaic:24"]
    for name in leak["attackers"]:
        for setting in ("raw->protected", "protected->protected"):
            leaked, mosaicked = leak["attackers"][name][setting]["rank1"], mosaic["attackers"][name][setting]["rank1"]
            assert leaked > mosaicked, (name, setting)
    assert leak["summary"]["best_attack_rank1"] > mosaic["summary"]["best_attack_rank1"]
    assert leak["face"]["face_rate"] > mosaic["face"]["face_rate"]
    assert leak["pixel"]["ssim"] == 1.0 and leak["pixel"]["psnr"] == "inf"
    # the identity "protection" gives the attackers exactly their raw→raw reference
    ref = quick_run[0]["reference"]["attackers"]
    for name, res in leak["attackers"].items():
        assert res["raw->protected"]["rank1"] == ref[name]["raw->raw"]["rank1"]


def test_markdown_section_is_replaced_in_place(tmp_path) -> None:
    page = tmp_path / "p.md"
    page.write_text(f"intro\n\n{BEGIN}\nold numbers\n{END}\n\nafter\n")
    fake = {
        "settings": {
            "dataset": "cuhk01",
            "split_seed": 0,
            "attackers": [{"name": "a"}],
            "work_size_hw": [128, 64],
            "split": {"test_identities": 2, "queries": 4, "gallery": 4, "train_identities": 3},
            "machine": {"summary": "test"},
            "adaptive": None,
            "recovery": None,
            "face_detector": None,
        },
        "reference": {
            "authorized": {"raw->raw": {"rank1": 1.0, "mAP": 1.0}},
            "attackers": {"a": {"raw->raw": {"rank1": 0.5, "mAP": 0.5}}},
        },
        "protections": {},
        "timings_s": {"total": 1.0},
    }
    write_markdown(fake, page)
    text = page.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\nafter\n") and "old numbers" not in text
    assert text.count(BEGIN) == 1 and "| raw (no protection) |" in text


def test_baseline_specs() -> None:
    assert parse_baseline("mosaic:24").name == "mosaic:24" and parse_baseline("blur").name == "blur:12"
    assert parse_baseline("none").kind == "identity"
    img = np.random.default_rng(0).integers(0, 255, (2, 128, 64, 3), dtype=np.uint8)
    assert np.array_equal(parse_baseline("none").apply(img), img)
    assert not np.array_equal(parse_baseline("mosaic:24").apply(img), img)
    a, b = parse_baseline("noise:0.5", seed=3).apply(img), parse_baseline("noise:0.5", seed=3).apply(img)
    assert np.array_equal(a, b), "the noise baseline is seeded"
    for bad in ("sepia:3", "mosaic:x", "blur:-1"):
        with pytest.raises(ValueError):
            parse_baseline(bad)


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_bad_input_is_a_clear_error(tmp_path, capsys) -> None:
    root = tmp_path / "data"
    root.mkdir()
    base = ["--root", str(root), "--face-detector", "none", "--out", str(tmp_path / "out")]
    err = _usage_error(capsys, ["--bundle", str(tmp_path / "no_bundle"), *base])
    assert "--bundle" in err and "no_bundle" in err
    err = _usage_error(capsys, ["--bundle", str(BUNDLE), "--dataset", "imagenet", *base])
    assert "--dataset" in err and "unknown dataset 'imagenet'" in err
    err = _usage_error(capsys, ["--bundle", str(BUNDLE), *base, "--attacker-reid", str(tmp_path / "nope.onnx")])
    assert "--attacker-reid" in err and "nope.onnx" in err and "does not exist" in err
    err = _usage_error(capsys, ["--bundle", str(BUNDLE), *base])  # no default attacker under ROOT
    assert "--attacker-reid" in err
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    err = _usage_error(capsys, ["--bundle", str(BUNDLE), *base, "--attacker-reid", str(model), "--baselines", "sepia"])
    assert "--baselines" in err and "sepia" in err
    err = _usage_error(
        capsys,
        [
            "--bundle",
            str(BUNDLE),
            "--root",
            str(root),
            "--attacker-reid",
            str(model),
            "--face-detector",
            str(tmp_path / "face.onnx"),
        ],
    )
    assert "--face-detector" in err
    err = _usage_error(
        capsys,
        ["--bundle", str(BUNDLE), *base, "--attacker-reid", str(model), "--recovery-key", str(tmp_path / "k.key")],
    )
    assert "--recovery-key" in err
    assert not (tmp_path / "out").exists(), "nothing is written on bad input"


def test_missing_dataset_under_root_is_a_clear_error(tmp_path, capsys) -> None:
    if not (BUNDLE / "bundle.yaml").is_file():
        pytest.skip("needs models/demo")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    err = _usage_error(
        capsys,
        [
            "--bundle",
            str(BUNDLE),
            "--root",
            str(tmp_path),
            "--attacker-reid",
            str(model),
            "--face-detector",
            "none",
            "--adaptive-iters",
            "0",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "--dataset/--root" in err and "cuhk01" in err


def test_the_harness_does_not_import_training() -> None:
    """Layering: training/ is the top package; the harness and reid/ stand below it."""
    import subprocess
    import sys

    code = (
        "import sys, anonymizer.evaluate_privacy as e, anonymizer.privacy_attacks, anonymizer.privacy_attackers, "
        "anonymizer.privacy_report, anonymizer.face_detect, reid.metrics, reid.datasets; "
        "print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@needs_data
def test_a_scrambling_bundle_is_judged_on_what_it_releases(tmp_path) -> None:
    """A payload on a mosaic: attackers see scrambled images, the key holder is measured through the
    sealed seeds, the recovery attack also tries the payload reader and the sorted-block reader, and
    the bundle's own C (with its payload reader) is tried on the released crops as an attacker."""
    from tests.test_bundle import make_tiny_bundle

    key = tmp_path / "recovery.key"
    bundle = make_tiny_bundle(tmp_path / "scrambling", key, skip_mosaic_block=6, payload=(0.1, 0), c_front_ngf=8)
    args = [a if a != str(BUNDLE) else str(bundle) for a in QUICK[: QUICK.index("--baselines")]]
    assert main([*args, "--recovery-key", str(key), "--face-detector", "none", "--out", str(tmp_path / "eval")]) == 0
    row = json.loads((tmp_path / "eval" / "privacy.json").read_text())["protections"]["learned"]
    assert "scrambled on blocks of 6 px" in row["spec"]["released"]
    assert row["key_holder"]["measured"] is True and row["key_holder"]["n_images"] == 40
    names = list(row["recovery_attack"]["candidates"])
    assert names[0] == "residual U-Net" and names[1].startswith("payload reader") and "sorted pixels" in names[2]
    assert set(row["bundle_c_on_released"]) >= {"raw->protected", "protected->protected"}
