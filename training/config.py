"""Configuration of ``python -m training``: defaults → YAML file → seed-style ``KEY VALUE`` overrides.

The seed writes values the way its yacs config parsed them: ``"('market1501')"`` (a parenthesised
string), ``"('on')"``, ``"24.0"``, ``"<R1>"`` for ``MODEL.VAL_R1`` (``configs`` widens ``75`` to
``75.0`` where the default is a float). Values are then checked against their allowed choices so a
typo fails before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from configs import ConfigError, build_config
from configs.training_defaults import get_training_defaults

ON_OFF = ("on", "off")
CHOICES = {
    "MODEL.MODE": ("C", "GCR"),
    "MODEL.PRETRAIN_CHOICE": ("imagenet", "self", "none"),
    "MODEL.OUTPUT_MODE": ("both", "protected", "origin"),
    "MODEL.NECK": ("bnneck", "no"),
    "MODEL.ATTACKER_QUERIES": ("both", "split"),
    "INPUT.TYPE": ("mosaic", "blur", "noise"),
    "TEST.NECK_FEAT": ("after", "before"),
    "TEST.GALLERY_MODE": ("origin", "protected", "both"),
    "TEST.QUERY_MODE": ("origin", "protected", "both"),
    "SOLVER.OPTIMIZER_NAME": ("Adam", "AdamW", "SGD"),
    "DATASETS.CUHK03_TYPE": ("detected", "labeled"),
    **{
        k: ON_OFF
        for k in (
            "MODEL.GENERALIZED_MEAN_POOL",
            "MODEL.NON_LOCAL",
            "MODEL.IF_LABELSMOOTH",
            "MODEL.CENTER_LOSS",
            "MODEL.WEIGHT_REGULARIZED_TRIPLET",
            "DATALOADER.PK_SAMPLER",
            "SOLVER.AMP",
            "SOLVER.RESUME",
            "TEST.EVALUATE_ONLY",
            "TEST.FEAT_NORM",
            "TEST.ALL_SETTINGS",
            "TEST.RE_RANKING",
        )
    },
}


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def validate(cfg) -> None:
    """Raise :class:`ConfigError` naming the key whose value is not one of its choices."""
    for key, allowed in CHOICES.items():
        value = _lookup(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' is '{value}', expected one of {', '.join(allowed)}")
    if len(cfg.INPUT.IMG_SIZE) != 2 or len(cfg.INPUT.DESENS_SIZE) != 2:
        raise ConfigError("INPUT.IMG_SIZE and INPUT.DESENS_SIZE are [height, width]")
    if cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be a multiple of "
            f"DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE}) for the PK sampler"
        )
    if not 0.0 <= cfg.DATASETS.VAL_FRACTION < 1.0:
        raise ConfigError("DATASETS.VAL_FRACTION must be in [0, 1)")
    if not 0.0 <= cfg.MODEL.UPGRADE_MARGIN < 1.0:
        raise ConfigError(
            "MODEL.UPGRADE_MARGIN must be in [0, 1): the share of ε an encoder must leave unused "
            "to be frozen as the new supervision"
        )
    if not 0.0 <= cfg.MODEL.G_PAYLOAD_SCALE < 1.0:
        raise ConfigError(
            "MODEL.G_PAYLOAD_SCALE must be in [0, 1): the amplitude of G's scattered recovery code "
            "in P ([-1, 1] units); 0 turns it off"
        )
    if not 0.0 <= cfg.MODEL.G_SKIP_DETAIL < 0.5:
        raise ConfigError(
            "MODEL.G_SKIP_DETAIL must be in [0, 0.5): the share of O's detail kept by G's blur branch "
            "and its supervision; 0 turns it off"
        )
    if cfg.MODEL.G_SKIP_DETAIL > 0 and cfg.MODEL.G_SKIP_BLUR_SIGMA <= 0:
        raise ConfigError(
            "MODEL.G_SKIP_DETAIL needs MODEL.G_SKIP_BLUR_SIGMA > 0 (the blur branch that keeps the detail)"
        )
    if cfg.MODEL.G_SKIP_MOSAIC < 0 or (cfg.MODEL.G_SKIP_MOSAIC > 0 and cfg.MODEL.G_SKIP_BLUR_SIGMA > 0):
        raise ConfigError(
            "MODEL.G_SKIP_MOSAIC is G's fixed mosaic branch (block size in pixels at INPUT.DESENS_SIZE, 0 = off); "
            "G has one fixed branch, so not together with MODEL.G_SKIP_BLUR_SIGMA"
        )
    if cfg.MODEL.G_INIT_DIR and cfg.MODEL.MODE != "GCR":
        raise ConfigError("MODEL.G_INIT_DIR starts the encoder G of a GCR run: it needs MODEL.MODE GCR")
    if not cfg.SOLVER.HEAD_LR_FACTOR > 0:
        raise ConfigError(
            f"SOLVER.HEAD_LR_FACTOR must be > 0 (the head's learning rate is this × SOLVER.BASE_LR), "
            f"got {cfg.SOLVER.HEAD_LR_FACTOR}"
        )
    if cfg.MODEL.CROSS_KIND_TRIPLET < 0:
        raise ConfigError(
            "MODEL.CROSS_KIND_TRIPLET must be >= 0: the weight of the metric loss across raw and "
            "protected images; 0 turns it off"
        )
    if cfg.MODEL.CROSS_KIND_TRIPLET > 0 and cfg.MODEL.METRIC_LOSS_TYPE in ("none", "softmax"):
        raise ConfigError("MODEL.CROSS_KIND_TRIPLET needs a metric loss (MODEL.METRIC_LOSS_TYPE triplet or wrt)")
    if cfg.MODEL.CROSS_KIND_TRIPLET > 0 and (cfg.MODEL.OUTPUT_MODE != "both" or cfg.MODEL.FREEZE_C):
        raise ConfigError(
            "MODEL.CROSS_KIND_TRIPLET needs hybrid batches that train C: MODEL.OUTPUT_MODE both "
            "and MODEL.FREEZE_C False"
        )
    if cfg.MODEL.G_PAYLOAD_SCALE > 0:
        _check_payload_size(cfg)
    _check_c_reader(cfg)


def _check_c_reader(cfg) -> None:
    """MODEL.C_READER_NGF: C's own payload reader needs a code on a mosaic, a C that trains, no blur."""
    ngf, l1, gate = int(cfg.MODEL.C_READER_NGF), float(cfg.MODEL.C_READER_L1), float(cfg.MODEL.C_READER_GATE)
    if ngf < 0 or l1 < 0 or gate < 0:
        raise ConfigError("MODEL.C_READER_NGF, MODEL.C_READER_L1 and MODEL.C_READER_GATE must be >= 0")
    if ngf == 0:
        return
    if cfg.MODEL.MODE != "GCR" or cfg.MODEL.G_PAYLOAD_SCALE <= 0 or cfg.MODEL.G_SKIP_MOSAIC <= 0:
        raise ConfigError(
            "MODEL.C_READER_NGF reads the code G writes on a mosaic: it needs MODEL.MODE GCR, "
            "MODEL.G_PAYLOAD_SCALE > 0 and MODEL.G_SKIP_MOSAIC > 0"
        )
    if cfg.MODEL.FREEZE_C or cfg.MODEL.OUTPUT_MODE != "both" or cfg.MODEL.C_INPUT_BLUR_SIGMA > 0:
        raise ConfigError(
            "MODEL.C_READER_NGF is learned with C on raw and protected images: it needs MODEL.FREEZE_C False, "
            "MODEL.OUTPUT_MODE both and MODEL.C_INPUT_BLUR_SIGMA 0 (a blur would erase the code it reads)"
        )


def _check_payload_size(cfg) -> None:
    from anonymizer.payload import TILE as PAYLOAD_TILE  # (torch: only imported when a payload is asked for)

    if any(int(v) % PAYLOAD_TILE for v in cfg.INPUT.IMG_SIZE):
        raise ConfigError(
            f"MODEL.G_PAYLOAD_SCALE needs INPUT.IMG_SIZE sides that are multiples of {PAYLOAD_TILE} (the "
            f"payload's tile), got {list(cfg.INPUT.IMG_SIZE)}"
        )


def load_config(config_file: str | Path | None = None, overrides: Sequence[str] = ()):
    """Build the frozen training config; unknown keys and bad values raise :class:`ConfigError`."""
    cfg = build_config(get_training_defaults(), config_file, overrides)
    validate(cfg)
    return cfg


def dataset_name(cfg) -> str:
    """``DATASETS.NAMES`` as one name; the seed's ``('market1501')`` is already a plain string."""
    names = cfg.DATASETS.NAMES
    if isinstance(names, (list, tuple)):
        if len(names) != 1:
            raise ConfigError(f"DATASETS.NAMES: one dataset at a time, got {list(names)}")
        names = names[0]
    # a shell-unquoted "('market1501')" arrives as the bare text "(market1501)"
    return str(names).strip().strip("()").strip().strip("'\"").strip()
