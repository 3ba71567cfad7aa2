"""Pick the anonymizer from ``--anonymizer`` / ``ANONYMIZER.KIND``: a kind's name, a bundle path, or 'auto'.

The kinds (mosaic, blur, noise, learned bundles, ...) are registered in
:data:`anonymizer.kinds.ANONYMIZERS`, one module of :mod:`anonymizer.kinds` each; a name picks its kind,
a path goes to the first kind whose ``accepts(path)`` says yes.

'auto' uses the learned demo bundle shipped in ``models/demo`` and falls back to mosaic, with a
warning, when the bundle is missing or cannot be loaded: the pipeline must always protect. A relative
``ANONYMIZER.DEFAULT_BUNDLE`` is looked up where privreid ships its files (:mod:`privreid.resources`:
the repository, or the installed package data), never in the working directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from anonymizer.base import CropAnonymizer
from anonymizer.kinds import ANONYMIZERS, named_kinds, path_kinds
from privreid.resources import shipped_path

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout (tests locate models/demo with it)


class AnonymizerError(RuntimeError):
    """The requested anonymizer cannot be built (missing bundle, bad weights, unknown kind)."""


def _build(name: str, spec: str | Path, cfg, backend: str, device: str) -> CropAnonymizer:
    return ANONYMIZERS.get(name).from_config(spec, cfg, backend, device)


def _load_path(path: Path, cfg, backend: str, device: str) -> CropAnonymizer:
    """``path`` built by the first path kind that accepts it (a bundle folder, for the shipped kinds)."""
    chosen = next((name for name, kind in path_kinds() if kind.accepts(path)), None)
    if chosen is None:
        raise AnonymizerError(f"no anonymizer kind loads {path} (ANONYMIZER.KIND; known: {_known()})")
    try:
        return _build(chosen, path, cfg, backend, device)
    except ImportError as exc:
        raise AnonymizerError(f"learned bundles are not supported by this build: {exc}") from exc


def _known() -> str:
    paths = ", ".join(name for name, _ in path_kinds())
    return f"{', '.join(named_kinds())}, auto, or the path of a {paths}"


# Below these a hand-made protection leaves a person recognizable (a 2-pixel mosaic or a 0.01 blur is
# the raw crop), so such settings are refused rather than reported as "protected". The crop is
# processed at 256×128 (anonymizer.baselines), so a mosaic block of 8 leaves 16×32 blocks of a person.
MINIMUMS = {"MARGIN": 0.0, "MOSAIC_SIZE": 8, "BLUR_RADIUS": 4.0, "NOISE_SIGMA": 0.2}


def check_settings(cfg) -> None:
    """Refuse ANONYMIZER settings that cannot protect; the message names the key and its minimum."""
    for key, low in MINIMUMS.items():
        if float(cfg[key]) < low:
            raise AnonymizerError(
                f"ANONYMIZER.{key} {cfg[key]} is below its minimum {low}: it would leave people "
                "recognizable (configs/pipeline_defaults.py)"
            )
    fill = list(cfg.FILL)
    if len(fill) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill):
        raise AnonymizerError(f"ANONYMIZER.FILL must be three integers 0-255 (B, G, R), got {cfg.FILL}")


def build_anonymizer(kind: str, cfg, backend: str | None = None, device: str | None = None) -> CropAnonymizer:
    """``cfg`` is the pipeline config's ANONYMIZER node."""
    check_settings(cfg)
    backend = backend or cfg.BACKEND
    device = device or cfg.DEVICE
    if str(kind).strip().lower() in named_kinds():
        return _build(kind, kind, cfg, backend, device)
    if kind == "auto":
        default = shipped_path(cfg.DEFAULT_BUNDLE)
        if (default / "bundle.yaml").is_file():
            try:
                return _load_path(default, cfg, backend, device)
            except Exception as exc:
                log.warning("cannot load the default learned anonymizer %s (%s): using mosaic", default, exc)
        else:
            log.warning("no learned anonymizer bundle at %s: using the mosaic baseline", default)
        return _build("mosaic", "mosaic", cfg, backend, device)
    path = Path(kind).expanduser()
    if not path.exists():
        raise AnonymizerError(
            f"anonymizer '{kind}' in ANONYMIZER.KIND is neither a known kind nor an existing bundle path "
            f"(known: {_known()})"
        )
    try:
        return _load_path(path, cfg, backend, device)
    except AnonymizerError:
        raise
    except Exception as exc:
        raise AnonymizerError(f"cannot load anonymizer bundle {path}: {exc}") from exc
