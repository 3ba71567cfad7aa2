"""Ultralytics ``.pt`` checkpoints loaded without running code that came with the file.

A ``.pt`` file is a pickle, and Ultralytics unpickles it with ``weights_only=False`` by default, so
a crafted file passed as ``--detector`` would run its payload before any check could reject it.
Ultralytics ships a restricted loader (``torch_safe_load(..., safe_only=True)``: ``torch.load``
with ``weights_only=True`` against an allow-list of its own and torch's model classes); every
``.pt`` goes through it first, on a private copy so the file cannot be swapped between the check
and the load, and Ultralytics' own load of that copy runs in its safe mode too. Files it refuses
are refused here with a pointer to the formats that carry no code (ONNX, OpenVINO).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

SAFE_LOAD_ENV = "ULTRALYTICS_SAFE_LOAD"


class UnsafeWeightsError(ValueError):
    """A checkpoint refused by the restricted loader (foreign code or an unknown format)."""


def enable_ultralytics_safe_mode() -> None:
    """Ultralytics reads this flag when it is first imported: set it before that import."""
    os.environ[SAFE_LOAD_ENV] = "1"


def _refusal(path: Path, why: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"{path}: refused to load this PyTorch checkpoint ({why}). Only official Ultralytics model classes "
        "are accepted from .pt files; export the model to ONNX or OpenVINO (yolo export model=... "
        "format=onnx|openvino) and pass that instead"
    )


def vetted_copy(path: str | Path, workdir: str | Path) -> Path:
    """A private copy of ``path`` in ``workdir`` that the restricted loader accepted.

    Raises:
        UnsafeWeightsError: the file references anything outside the allow-list, or this
            Ultralytics/torch combination has no restricted loader (then no .pt is trusted).
        FileNotFoundError: ``path`` does not exist.
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"detector weights not found: {src}")
    enable_ultralytics_safe_mode()
    from ultralytics.nn import tasks

    if not getattr(tasks, "_SafeLoad", None) or not tasks._SafeLoad.SUPPORTED:
        raise _refusal(src, "this Ultralytics/torch version has no weights-only loader")
    copy = Path(workdir) / src.name
    shutil.copyfile(src, copy)
    os.chmod(copy, 0o600)
    try:
        tasks.torch_safe_load(str(copy), safe_only=True)
    except Exception as exc:  # UnpicklingError wrapped in TypeError, a corrupt zip, a TorchScript archive
        if isinstance(exc.__cause__, pickle.UnpicklingError) or isinstance(exc, pickle.UnpicklingError):
            why = "it references code or types outside the allow-list of model classes"
        else:
            why = str(exc).splitlines()[0].replace("ERROR ❌️ ", "").replace(str(copy), src.name)
        raise _refusal(src, why) from exc
    return copy


def private_workdir() -> tempfile.TemporaryDirectory:
    """A 0700 folder for the vetted copy; removed once the model is in memory."""
    return tempfile.TemporaryDirectory(prefix="privreid-weights-")
