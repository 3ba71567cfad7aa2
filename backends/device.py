"""The one device convention of every backend: ``auto | cpu | cuda | cuda:N`` (and ``gpu[:N]``).

Parsed once (:func:`parse_device`), so a spelling mistake fails the same way for every runtime; each
backend then says whether it can run on the parsed device (``Backend.resolve_device``) and fails with a
message that names the device and what would work instead, rather than quietly running elsewhere.

``gpu[:N]`` is OpenVINO's GPU plugin (an Intel GPU); CUDA devices are ``cuda[:N]``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_KEY = "ANONYMIZER.DEVICE / --device"
KINDS = ("auto", "cpu", "cuda", "gpu")


@dataclass(frozen=True)
class Device:
    """A parsed device: ``kind`` is one of :data:`KINDS`, ``index`` the accelerator number (None: the first)."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def ordinal(self) -> int:
        """The accelerator number, 0 when none was given."""
        return self.index or 0


def parse_device(spec: str | Device | None, key: str = DEVICE_KEY) -> Device:
    """``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'gpu'``, ``'gpu:N'`` (case-insensitive; None or '' = auto).

    Raises ValueError naming ``key`` for anything else.
    """
    if isinstance(spec, Device):
        return spec
    text = str(spec or "auto").strip().lower()
    kind, sep, rest = text.partition(":")
    if kind in KINDS and not sep:
        return Device(kind)
    if kind in ("cuda", "gpu") and rest.isdigit():
        return Device(kind, int(rest))
    raise ValueError(f"unknown device {spec!r} in {key}; expected auto, cpu, cuda, cuda:N (or gpu[:N] for OpenVINO)")
