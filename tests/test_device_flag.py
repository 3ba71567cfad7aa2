"""``--device`` reaches every network of a run: the detector, the anonymizer and the Re-ID model.

The rule (stream/run_args.py): ``--device`` sets ANONYMIZER.DEVICE, DETECTOR.DEVICE and REID.DEVICE,
except the ones given as ``KEY VALUE``; a DEVICE key left '' follows ANONYMIZER.DEVICE.
"""

from __future__ import annotations

import pytest

import run_pipeline
from stream.run_args import DEVICE_KEYS, build_cfg, network_device, parse_args
from tests.test_feature_extractor import _tiny_onnx

NETWORKS = ("ANONYMIZER", "DETECTOR", "REID")


def _cfg(*argv: str):
    return build_cfg(parse_args(["--source", "x.mp4", "--output", "out", *argv]))


def test_device_sets_every_network():
    cfg = _cfg("--device", "cuda:1")
    assert {key: run_pipeline.network_device(cfg, key.split(".")[0]) for key in DEVICE_KEYS} == dict.fromkeys(
        DEVICE_KEYS, "cuda:1"
    )
    assert cfg.DETECTOR.DEVICE == cfg.REID.DEVICE == cfg.ANONYMIZER.DEVICE == "cuda:1"


def test_a_device_key_given_explicitly_wins_over_the_flag():
    cfg = _cfg("--device", "cuda:1", "DETECTOR.DEVICE", "cpu")
    assert [network_device(cfg, n) for n in NETWORKS] == ["cuda:1", "cpu", "cuda:1"]
    cfg = _cfg("REID.DEVICE", "cpu", "--device", "cuda:0")  # KEY VALUE before the flag: the same
    assert [network_device(cfg, n) for n in NETWORKS] == ["cuda:0", "cuda:0", "cpu"]


def test_without_the_flag_every_network_follows_the_anonymizer_device():
    assert [network_device(_cfg(), n) for n in NETWORKS] == ["cpu", "cpu", "cpu"]
    cfg = _cfg("ANONYMIZER.DEVICE", "cuda:0")
    assert [network_device(cfg, n) for n in NETWORKS] == ["cuda:0", "cuda:0", "cuda:0"]


def test_the_reid_model_is_built_on_its_device_with_its_batch(tmp_path):
    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    cfg = _cfg("--device", "cpu", "REID.MODEL", repr(str(model)), "REID.BATCH", "2")
    embed, fingerprint = run_pipeline._embedder(cfg, anonymizer=None)
    assert embed.batch_size == 2 and embed.dim == 16 and fingerprint == embed.fingerprint
    with pytest.raises(run_pipeline.ConfigError, match="REID.DEVICE 'tpu:0'"):
        run_pipeline._embedder(_cfg("--device", "tpu:0", "REID.MODEL", repr(str(model))), anonymizer=None)


def test_a_run_refuses_a_device_the_reid_model_cannot_use(tmp_path, vtest, capsys):
    """End to end: --device reaches REID.MODEL (today's only network that refuses an unknown device
    without a GPU); the run is refused at start, before any broker or camera."""
    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    code = run_pipeline.main(
        ["--source", str(vtest), "--output", str(tmp_path / "out"), "--detector", "hog", "--anonymizer", "mosaic"]
        + ["--kafka", "embedded", "--device", "tpu:0", "REID.MODEL", repr(str(model)), "LOG.PROGRESS", "False"]
    )
    assert code == run_pipeline.EXIT_REFUSED
    assert "tpu:0" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.mp4"))


def test_reid_batch_must_be_a_positive_count():
    with pytest.raises(run_pipeline.ConfigError, match="REID.BATCH"):
        run_pipeline.check_reid(_cfg("REID.BATCH", "0"))
