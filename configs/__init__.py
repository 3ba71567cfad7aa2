"""One configuration system for the pipeline and the training package.

Both use yacs ``CfgNode`` trees: defaults in Python (``configs.pipeline_defaults`` and
``configs.training_defaults``), a YAML file on top, then ``KEY VALUE`` overrides from the command
line, exactly like the seed's ``tools/main.py --config_file X.yml KEY VALUE ...``. Values are parsed
with ``ast.literal_eval`` so the seed's spelling (``"('market1501')"``, ``"('on')"``) works, and an
unknown key is an error that names the key.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from pathlib import Path

from yacs.config import CfgNode

CONFIG_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message names the key or the file."""


def _known_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, CfgNode):
            keys.extend(_known_keys(v, full + "."))
        else:
            keys.append(full)
    return keys


def _check_key(cfg: CfgNode, key: str) -> None:
    node = cfg
    parts = key.split(".")
    for part in parts:
        if not isinstance(node, CfgNode) or part not in node:
            close = [k for k in _known_keys(cfg) if k.rsplit(".", 1)[-1] == parts[-1]]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        node = node[part]


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _lookup(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _widen(default, raw: str) -> str:
    """``75`` where the default is a float means ``75.0``; yacs alone would refuse the int."""
    if isinstance(default, float):
        value = _parse_value(raw)
        if isinstance(value, int) and not isinstance(value, bool):
            return repr(float(value))
    return raw


def apply_overrides(cfg: CfgNode, overrides: Sequence[str]) -> CfgNode:
    """Apply ``KEY VALUE`` pairs; raise :class:`ConfigError` naming any bad key or value."""
    if len(overrides) % 2:
        raise ConfigError(f"overrides must come in KEY VALUE pairs, got an odd count: {list(overrides)}")
    for key, raw in zip(overrides[0::2], overrides[1::2], strict=True):
        _check_key(cfg, key)
        raw = _widen(_lookup(cfg, key), raw)
        try:
            cfg.merge_from_list([key, raw])
        except (ValueError, AssertionError, KeyError) as exc:
            raise ConfigError(f"bad value for config key '{key}': {raw!r} ({exc})") from exc
    return cfg


def merge_file(cfg: CfgNode, path: str | Path) -> CfgNode:
    """Merge a YAML file into ``cfg``; unknown keys and type mismatches name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = CfgNode.load_cfg(path.read_text())
    except Exception as exc:  # yaml errors come in many classes
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    for key in _known_keys(loaded):
        try:
            _check_key(cfg, key)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    for key in _known_keys(loaded):
        _coerce_scalar(_lookup(cfg, key), loaded, key)
    try:
        cfg.merge_from_other_cfg(loaded)
    except (ValueError, AssertionError, KeyError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return cfg


def _coerce_scalar(default, loaded: CfgNode, key: str) -> None:
    """yacs decodes the YAML string ``'0'`` to the int 0, so a run's own ``config.yaml``
    (``MODEL.DEVICE_ID: '0'``) could not be read back; ``75`` where a float is expected is
    ``75.0``; and a bare ``off``/``on`` (a YAML boolean) where a string is expected is that word.
    Only these unambiguous widenings: anything else stays a type error."""
    *parents, leaf = key.split(".")
    node = loaded
    for part in parents:
        node = node[part]
    value = node[leaf]
    if isinstance(default, str):
        # YAML 1.1 reads a bare on/off/yes/no as a boolean; for a string key (MOTION_NET: off) that is the word
        if isinstance(value, bool):
            node[leaf] = repr("on" if value else "off")
        # yacs literal-evaluates strings while merging ('0' -> 0): quote what would not stay a string
        elif isinstance(value, str) and not isinstance(_parse_value(value), str):
            node[leaf] = repr(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            node[leaf] = repr(str(value))
    elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        node[leaf] = float(value)


def build_config(defaults: CfgNode, config_file: str | Path | None = None, overrides: Iterable[str] = ()) -> CfgNode:
    """Defaults → YAML file → ``KEY VALUE`` overrides, then freeze."""
    cfg = defaults.clone()
    if config_file:
        merge_file(cfg, config_file)
    apply_overrides(cfg, list(overrides))
    cfg.freeze()
    return cfg


__all__ = ["CONFIG_DIR", "ConfigError", "apply_overrides", "build_config", "merge_file", "CfgNode"]
