"""Common dataset structure, folder scanning, and the validation split rules.

Every dataset yields lists of ``(path, pid, camid)`` items: ``train`` with contiguous labels
``0..N-1``, ``query``/``gallery`` with the dataset's own identity numbers (``-1`` = junk,
``0`` = distractor on Market-1501), and optionally ``val_query``/``val_gallery``.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

Item = tuple[str, int, int]
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MARKET_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")


class DatasetError(RuntimeError):
    """A dataset is missing, incomplete or malformed; the message says what was expected where."""


@dataclass
class ReidDataset:
    name: str
    root: Path
    train: list[Item]
    query: list[Item]
    gallery: list[Item]
    val_query: list[Item] | None = None
    val_gallery: list[Item] | None = None
    #: where validation comes from: "split" (the dataset's own _val folders), "carved", or "none"
    val_source: str = "none"
    notes: list[str] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({pid for _, pid, _ in self.train})

    @property
    def has_val(self) -> bool:
        return bool(self.val_query) and bool(self.val_gallery)

    def summary(self) -> str:
        """A small table an operator can check against the dataset's published statistics."""
        rows = [("train", self.train), ("query", self.query), ("gallery", self.gallery)]
        if self.val_query and self.val_gallery:
            rows += [("val_query", self.val_query), ("val_gallery", self.val_gallery)]
        lines = [
            f"dataset {self.name} at {self.root} (validation: {self.val_source})",
            f"  {'subset':<12}{'ids':>7}{'images':>9}{'cams':>6}",
        ]
        for label, items in rows:
            lines.append(
                f"  {label:<12}{len({p for _, p, _ in items}):>7}{len(items):>9}{len({c for _, _, c in items}):>6}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def relabel(items: Iterable[Item]) -> list[Item]:
    """Map identities to ``0..N-1`` in sorted order (classifier labels)."""
    items = list(items)
    mapping = {pid: i for i, pid in enumerate(sorted({p for _, p, _ in items}))}
    return [(path, mapping[pid], cam) for path, pid, cam in items]


def require_dirs(base: Path, names: Iterable[str], dataset: str, layout_hint: str) -> None:
    if not base.is_dir():
        raise DatasetError(f"{dataset}: folder {base} does not exist. Expected layout:\n{layout_hint}")
    missing = [n for n in names if not (base / n).is_dir()]
    if missing:
        raise DatasetError(f"{dataset}: {base} lacks {', '.join(missing)}. Expected layout:\n{layout_hint}")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def scan_dir(
    folder: Path, parse: Callable[[str], tuple[int, int] | None], dataset: str, allow_empty: bool = False
) -> list[Item]:
    """Scan one flat image folder; ``parse(filename) -> (pid, camid 0-based)``; malformed names fail."""
    items: list[Item] = []
    for path in list_images(folder):
        parsed = parse(path.name)
        if parsed is None:
            raise DatasetError(f"{dataset}: cannot read identity/camera from file name '{path.name}' in {folder}")
        items.append((str(path), parsed[0], parsed[1]))
    if not items and not allow_empty:
        raise DatasetError(f"{dataset}: no images ({'/'.join(IMAGE_EXTS)}) in {folder}")
    return items


def parse_market_name(name: str) -> tuple[int, int] | None:
    """``0002_c1s1_000451_03.jpg`` → (2, 0); ``-1_c3...`` → (-1, 2). Cameras are 1-based in names."""
    m = MARKET_PATTERN.match(name)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) - 1


def choose_val_query(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Split held-out identities' images into (val_query, val_gallery), ``fraction`` to the query.

    Per identity, ``max(1, round(fraction * n))`` images (identities with a single image stay in
    the gallery as negatives) are drawn at random, preferring images that leave a same-identity
    image from another camera in the gallery, so that as many queries as possible are valid under
    the same-camera exclusion.
    """
    rng = random.Random(seed)
    by_pid: dict[int, list[Item]] = defaultdict(list)
    for item in sorted(items):
        by_pid[item[1]].append(item)
    query, gallery = [], []
    for pid in sorted(by_pid):
        imgs = by_pid[pid][:]
        rng.shuffle(imgs)
        n_q = max(1, round(fraction * len(imgs))) if len(imgs) > 1 else 0
        chosen: list[Item] = []
        for img in imgs:
            if len(chosen) == n_q:
                break
            rest = [g for g in imgs if g is not img and g not in chosen]
            if any(g[2] != img[2] for g in rest):
                chosen.append(img)
        for img in imgs:  # single-camera identities: fill up at random
            if len(chosen) < n_q and img not in chosen:
                chosen.append(img)
        query += chosen
        gallery += [g for g in imgs if g not in chosen]
    return query, gallery


def held_out_pids(pids: Iterable[int], fraction: float) -> set[int]:
    """The first ``fraction`` of the sorted identities (the seed's rule, applied to identities)."""
    ordered = sorted(set(pids))
    return set(ordered[: int(round(len(ordered) * fraction))])


def carve_validation(
    train: list[Item],
    fraction: float,
    seed: int,
    query_rule: Callable[[list[Item]], tuple[list[Item], list[Item]]] | None = None,
) -> tuple[list[Item], list[Item], list[Item]]:
    """Hold out identities of a train list as validation: returns (train, val_query, val_gallery).

    ``train`` must still carry the original identity numbers; relabel afterwards.
    """
    held = held_out_pids((p for _, p, _ in train), fraction)
    rest = [it for it in train if it[1] not in held]
    val = [it for it in train if it[1] in held]
    q, g = query_rule(val) if query_rule else choose_val_query(val, 0.2, seed)
    return rest, q, g
