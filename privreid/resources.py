"""Files that ship with privreid (the demo bundle ``models/demo``, ``configs/*.yaml``), wherever it runs from.

* From a checkout or an editable install (``pip install -e .``, scripts/setup.sh) they are where the
  repository has them.
* From a wheel (``pip install .``) ``models/`` is package data of :mod:`privreid` (``privreid/models/``,
  pyproject.toml ``[tool.setuptools.package-dir]``) and ``configs/`` is the installed ``configs`` package,
  so neither depends on the working directory.

Standard library only and free of project imports: every layer may use it (docs/architecture.md).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path, PurePosixPath

# the folder that holds the top-level packages: the repository root, or site-packages when installed
PACKAGES_ROOT = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = "models/demo"


def _parts(relative: str | os.PathLike[str]) -> tuple[str, ...]:
    return PurePosixPath(Path(relative).as_posix()).parts


def candidates(relative: str | os.PathLike[str]) -> list[Path]:
    """Where ``relative`` (spelled as in the repository, e.g. ``models/demo``) may be, in search order."""
    parts = _parts(relative)
    found: list[Path] = []
    try:
        packaged = resources.files(__package__ or "privreid").joinpath(*parts)
    except (ModuleNotFoundError, TypeError):  # not importable as a package (a copied file)
        packaged = None
    if isinstance(packaged, Path):  # a wheel unpacked on disk; a zip import cannot be handed out as a folder
        found.append(packaged)
    found.append(PACKAGES_ROOT.joinpath(*parts))
    return found


def shipped_path(relative: str | os.PathLike[str]) -> Path:
    """The shipped file or folder ``relative``; an absolute path is returned as it is.

    The first candidate that exists wins; when none does, the repository-root spelling is returned so
    that the caller's "not found" message names the usual place."""
    if Path(relative).is_absolute():
        return Path(relative)
    options = candidates(relative)
    return next((p for p in options if p.exists()), options[-1])


def demo_bundle_dir() -> Path:
    """The committed demo anonymizer bundle (``PRIVREID_DEMO_BUNDLE`` overrides it)."""
    override = os.environ.get("PRIVREID_DEMO_BUNDLE")
    return Path(override) if override else shipped_path(DEMO_BUNDLE)


__all__ = ["DEMO_BUNDLE", "PACKAGES_ROOT", "candidates", "demo_bundle_dir", "shipped_path"]
