"""The crop protections ``ANONYMIZER.KIND`` / ``--anonymizer`` can name, one module each.

An anonymizer kind is registered in :data:`ANONYMIZERS` by a module of this package; it provides
``from_config(spec, cfg, backend, device) -> CropAnonymizer`` (``cfg``: the ANONYMIZER node) and, when it
is chosen by a path rather than by its name, ``accepts(spec) -> bool``::

    # anonymizer/kinds/pixel_shuffle.py
    from anonymizer.kinds import ANONYMIZERS

    @ANONYMIZERS.register("pixel-shuffle")
    class PixelShuffle:
        @classmethod
        def from_config(cls, spec, cfg, backend, device): ...

Why a package of its own: the registry imports every module of its package on the first lookup, and
the rest of :mod:`anonymizer` (privacy evaluation, recovery, the audit) is heavy and must not load
for that. 'auto' is a rule of :mod:`anonymizer.factory` (the demo bundle, else mosaic), not a kind.
"""

from __future__ import annotations

from typing import Any

from privreid.registry import Registry

ANONYMIZERS: Registry[Any] = Registry("anonymizer", key="ANONYMIZER.KIND", package="anonymizer.kinds")


def path_kinds() -> list[tuple[str, Any]]:
    """(name, kind) of the kinds chosen by a path (those with ``accepts``), in registration order."""
    return [(name, kind) for name, kind in ANONYMIZERS.items() if callable(getattr(kind, "accepts", None))]


def named_kinds() -> list[str]:
    """The kinds chosen by their name alone (``mosaic``, ``blur``, ``noise``)."""
    return [name for name, kind in ANONYMIZERS.items() if not callable(getattr(kind, "accepts", None))]
