"""Several privacy evaluations of one recipe in one table, with the goals checked per run."""

from __future__ import annotations

import json

from anonymizer.privacy_seeds import main, run_row


def _r(r1: float) -> dict:
    return {"rank1": r1, "mAP": r1}


def _evaluation(attacker_on_p: float, key_db: float) -> dict:
    return {
        "protections": {
            "learned": {
                "authorized": {
                    s: _r(0.7) for s in ("raw->raw", "raw->protected", "protected->raw", "protected->protected")
                },
                "attackers": {"A": {"raw->protected": _r(attacker_on_p), "protected->protected": _r(0.03)}},
                "face": {"face_rate": 0.0},
                "recovery_attack": {"psnr": 16.0},
                "key_holder": {"measured": True, "psnr": key_db},
            },
            "mosaic:24": {
                "attackers": {"A": {"raw->protected": _r(0.03), "protected->protected": _r(0.03)}},
                "face": {"face_rate": 0.0},
            },
        }
    }


def test_a_run_whose_attacker_gains_more_than_the_margin_misses_that_goal():
    ok = run_row(_evaluation(0.04, 29.0), "mosaic:24", 2.0)["goals"]
    leaky = run_row(_evaluation(0.08, 27.0), "mosaic:24", 2.0)["goals"]
    assert all(ok.values())
    assert not leaky["A raw->protected <= mosaic:24 + 2"] and leaky["A protected->protected <= mosaic:24 + 2"]
    assert not leaky["key holder >= 28 dB"] and leaky["recovery attack >= 3 dB below the key holder"]


def test_the_table_has_a_row_per_run_and_a_mean(tmp_path, capsys):
    paths = []
    for i, (p, db) in enumerate([(0.04, 29.0), (0.08, 27.0)]):
        path = tmp_path / f"s{i}" / "privacy.json"
        path.parent.mkdir()
        path.write_text(json.dumps(_evaluation(p, db)))
        paths.append(str(path))
    assert main([*paths, "--out", str(tmp_path / "rows.json")]) == 0
    text = capsys.readouterr().out
    assert "| s0 |" in text and "| s1 |" in text and "mean ± SD (2)" in text and "**missed**" in text
    assert set(json.loads((tmp_path / "rows.json").read_text())) == {"s0", "s1"}
    assert main([paths[0], "--baseline", "blur:12"]) == 2
