"""Datasets, PK samplers and loaders of the training package.

Train batches are dicts ``{"raw": T[B,3,H,W], "desensitized": T[B,3,H,W], "pid": T[B], "camid": T[B]}``
(normalised with ``INPUT.PIXEL_MEAN``/``PIXEL_STD``, paired augmentations). Test batches have the
same keys plus ``"index"``, without augmentation, and a deterministic M (noise seeded per image).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reid.datasets import Item

from .transforms import PairedTrainTransform, TestTransform, make_pair, read_rgb, to_tensor_pair


class PairDataset(Dataset):
    """(O, M) pairs of a list of ``(path, pid, camid)`` items."""

    def __init__(self, items: Sequence[Item], cfg, train: bool, seed: int = 0) -> None:
        self.items = list(items)
        self.img_size = list(cfg.INPUT.IMG_SIZE)
        self.desens_size = list(cfg.INPUT.DESENS_SIZE)
        self.kind, self.radius = cfg.INPUT.TYPE, float(cfg.INPUT.RADIUS)
        self.train = train
        self.seed = seed
        self.transform = (
            PairedTrainTransform.from_cfg(cfg) if train else TestTransform(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD)
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, pid, camid = self.items[index]
        # Training: fresh noise every time (torch's RNG is seeded per worker); test: fixed per image.
        seed = int(torch.randint(0, 2**31 - 1, ())) if self.train else self.seed * 1_000_003 + index
        raw, des = make_pair(
            read_rgb(path), self.img_size, self.kind, self.radius, self.desens_size, np.random.default_rng(seed)
        )
        pair = self.transform(to_tensor_pair(raw, des))
        return {"raw": pair[0], "desensitized": pair[1], "pid": pid, "camid": camid, "index": index}


class PKSampler(Sampler[int]):
    """P identities × K images per batch, optionally sharded across DDP ranks.

    Every rank draws the same global order (seeded by ``seed + epoch``; call ``set_epoch``) and
    takes its own contiguous ``batch_size / world_size`` slice of each global batch, i.e. whole
    identities: with K images each, every rank's slice holds complete PK groups, so batch-hard
    mining works per rank and the union over ranks is exactly the single-process batch.
    Identities with fewer than K images are sampled with replacement.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % num_instances:
            raise ValueError(f"batch size {batch_size} is not a multiple of K={num_instances}")
        if batch_size % (num_instances * world_size):
            raise ValueError(
                f"global batch {batch_size} must split into whole PK groups over "
                f"{world_size} processes (multiple of {num_instances * world_size})"
            )
        self.batch_size, self.k = batch_size, num_instances
        self.p = batch_size // num_instances
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index_by_pid[int(pid)].append(i)
        if len(self.index_by_pid) < self.p:
            raise ValueError(
                f"PK sampler needs at least P={self.p} identities, the training set has "
                f"{len(self.index_by_pid)}: lower SOLVER.IMS_PER_BATCH"
            )
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """All global batches of this epoch (identical on every rank; cached per epoch)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng(self.seed + self.epoch)
        chunks: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            idx = self.index_by_pid[pid]
            idx = list(rng.choice(idx, size=self.k, replace=True)) if len(idx) < self.k else list(rng.permutation(idx))
            chunks[pid] = [idx[j : j + self.k] for j in range(0, len(idx) - self.k + 1, self.k)]
        batches = []
        available = [pid for pid in chunks if chunks[pid]]
        while len(available) >= self.p:
            chosen = rng.choice(len(available), size=self.p, replace=False)
            batch: list[int] = []
            for c in chosen:
                batch += [int(i) for i in chunks[available[c]].pop()]
            batches.append(batch)
            available = [pid for pid in available if chunks[pid]]
        self._cache = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[int]:
        local = self.batch_size // self.world_size
        for batch in self.global_batches():
            yield from batch[self.rank * local : (self.rank + 1) * local]

    def __len__(self) -> int:
        return len(self.global_batches()) * (self.batch_size // self.world_size)


class ShuffleSampler(Sampler[int]):
    """Plain shuffling (``DATALOADER.PK_SAMPLER off``), sharded like :class:`PKSampler`."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.epoch = 0
        self.num_batches = n // batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng(self.seed + self.epoch).permutation(self.n)
        local = self.batch_size // self.world_size
        for b in range(self.num_batches):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield from (int(i) for i in batch[self.rank * local : (self.rank + 1) * local])

    def __len__(self) -> int:
        return self.num_batches * (self.batch_size // self.world_size)


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)


def build_train_loader(cfg, items: Sequence[Item], rank: int = 0, world_size: int = 1) -> DataLoader:
    """Loader over training pairs; ``SOLVER.IMS_PER_BATCH`` is the global batch across processes."""
    batch = cfg.SOLVER.IMS_PER_BATCH
    seed = cfg.SOLVER.SEED
    if cfg.DATALOADER.PK_SAMPLER == "on":
        sampler: PKSampler | ShuffleSampler = PKSampler(
            [pid for _, pid, _ in items],
            batch,
            cfg.DATALOADER.NUM_INSTANCE,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    else:
        sampler = ShuffleSampler(len(items), batch, seed=seed, rank=rank, world_size=world_size)
    if len(sampler) == 0:
        raise ValueError("the training set is too small for one batch: lower SOLVER.IMS_PER_BATCH")
    generator = torch.Generator()
    generator.manual_seed(seed * 7919 + rank)
    return DataLoader(
        PairDataset(items, cfg, train=True),
        batch_size=batch // world_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=True,
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0,
        pin_memory=torch.cuda.is_available(),
    )


def build_test_loader(cfg, items: Sequence[Item]) -> DataLoader:
    """Loader over ``items`` in order (queries first, then gallery, by convention)."""
    return DataLoader(
        PairDataset(items, cfg, train=False, seed=cfg.DATASETS.SPLIT_SEED),
        batch_size=cfg.TEST.IMS_PER_BATCH,
        shuffle=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        pin_memory=torch.cuda.is_available(),
    )


def iterations_per_epoch(cfg, loader: DataLoader) -> int:
    n = len(loader)
    cap = cfg.SOLVER.MAX_ITERS_PER_EPOCH
    return min(n, cap) if cap > 0 else n


__all__ = [
    "PairDataset",
    "PKSampler",
    "ShuffleSampler",
    "build_train_loader",
    "build_test_loader",
    "iterations_per_epoch",
]
