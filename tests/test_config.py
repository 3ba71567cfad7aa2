"""One config system: YAML + KEY VALUE overrides, seed spellings, clear errors."""

import pytest

from configs import ConfigError, build_config
from configs.pipeline_defaults import get_pipeline_defaults
from configs.training_defaults import get_training_defaults


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="DETECTOR.CONFIDENCE"):
        build_config(get_pipeline_defaults(), None, ["DETECTOR.CONFIDENCE", "0.3"])


def test_bad_type_names_the_key():
    with pytest.raises(ConfigError, match="DETECTOR.CONF"):
        build_config(get_pipeline_defaults(), None, ["DETECTOR.CONF", "'high'"])


def test_odd_override_count():
    with pytest.raises(ConfigError, match="pairs"):
        build_config(get_pipeline_defaults(), None, ["DETECTOR.CONF"])


def test_seed_spellings_parse():
    cfg = build_config(
        get_training_defaults(),
        None,
        [
            "DATASETS.NAMES",
            "('market1501')",
            "TEST.EVALUATE_ONLY",
            "('on')",
            "INPUT.RADIUS",
            "24.0",
            "OUTPUT_DIR",
            "('./log/market1501/x')",
            "MODEL.MODE",
            "C",
        ],
    )
    assert cfg.DATASETS.NAMES == "market1501"
    assert cfg.TEST.EVALUATE_ONLY == "on"
    assert cfg.INPUT.RADIUS == 24.0
    assert cfg.OUTPUT_DIR == "./log/market1501/x"


def test_yaml_file_with_unknown_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("DETECTOR:\n  KIND: hog\n  NOPE: 1\n")
    with pytest.raises(ConfigError, match="DETECTOR.NOPE"):
        build_config(get_pipeline_defaults(), f, [])


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_config(get_pipeline_defaults(), tmp_path / "nope.yaml", [])


def test_int_widens_to_float_where_default_is_float():
    cfg = build_config(get_pipeline_defaults(), None, ["DETECTOR.CONF", "1"])
    assert isinstance(cfg.DETECTOR.CONF, float) and cfg.DETECTOR.CONF == 1.0


def test_bare_yaml_on_off_is_the_word_where_a_string_is_expected(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("PRIVACY:\n  MOTION_NET: off\nKAFKA:\n  BOOTSTRAP: off\nLOG:\n  PROGRESS: off\n")
    cfg = build_config(get_pipeline_defaults(), path)
    assert cfg.PRIVACY.MOTION_NET == "off" and cfg.KAFKA.BOOTSTRAP == "off"
    assert cfg.LOG.PROGRESS is False  # a boolean key stays a boolean
