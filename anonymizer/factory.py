"""Pick the anonymizer from ``--anonymizer`` / ``ANONYMIZER.KIND``.

'auto' uses the learned demo bundle shipped in ``models/demo`` and falls back to mosaic, with a
warning, when the bundle is missing or cannot be loaded: the pipeline must always protect. A relative
``ANONYMIZER.DEFAULT_BUNDLE`` is looked up where privreid ships its files (:mod:`privreid.resources`:
the repository, or the installed package data), never in the working directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from anonymizer.base import CropAnonymizer
from anonymizer.baselines import DEFAULT_PARAMS, BaselineAnonymizer
from privreid.resources import shipped_path

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout (tests locate models/demo with it)


class AnonymizerError(RuntimeError):
    """The requested anonymizer cannot be built (missing bundle, bad weights, unknown kind)."""


def _baseline(kind: str, cfg) -> BaselineAnonymizer:
    params = {"mosaic": cfg.MOSAIC_SIZE, "blur": cfg.BLUR_RADIUS, "noise": cfg.NOISE_SIGMA}
    return BaselineAnonymizer(kind, float(params[kind]))


def _load_bundle(path: Path, cfg, backend: str, device: str) -> CropAnonymizer:
    try:
        from anonymizer.bundle import load_bundle
    except ImportError as exc:
        raise AnonymizerError(f"learned bundles are not supported by this build: {exc}") from exc
    return load_bundle(path, backend=backend, device=device, trusted_keys=cfg.get("TRUSTED_KEYS", "") or None)


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
    if kind in DEFAULT_PARAMS:
        return _baseline(kind, cfg)
    if kind == "auto":
        default = shipped_path(cfg.DEFAULT_BUNDLE)
        if (default / "bundle.yaml").is_file():
            try:
                return _load_bundle(default, cfg, backend, device)
            except Exception as exc:
                log.warning("cannot load the default learned anonymizer %s (%s): using mosaic", default, exc)
        else:
            log.warning("no learned anonymizer bundle at %s: using the mosaic baseline", default)
        return _baseline("mosaic", cfg)
    path = Path(kind).expanduser()
    if not path.exists():
        raise AnonymizerError(f"anonymizer '{kind}' is neither mosaic, blur, noise, auto nor an existing bundle path")
    try:
        return _load_bundle(path, cfg, backend, device)
    except AnonymizerError:
        raise
    except Exception as exc:
        raise AnonymizerError(f"cannot load anonymizer bundle {path}: {exc}") from exc
