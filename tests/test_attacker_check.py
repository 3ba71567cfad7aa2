"""The validation's outside attackers can score validation's split in both directions, not only
its queries against its gallery (MODEL.ATTACKER_QUERIES)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.attacker_check import attacker_rank1
from training.config import ConfigError, load_config


class FeaturesAsImages(nn.Module):
    """An 'attacker' whose features are its input vectors, so the test decides every distance."""

    name = "vectors"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _loader() -> tuple[list[dict], int]:
    """3 identities, camera 0 images first (the split's queries), then camera 1 (the gallery). Every
    query finds its identity; one gallery image, as a query, looks like another identity's query."""
    e = torch.eye(8)
    queries = [e[k] + 0.01 * e[7] for k in range(3)]
    gallery = [e[0] + 0.1 * e[3], e[1] + 0.1 * e[4], e[2] + 0.1 * e[5], e[1] + 0.9 * e[6] + 0.3 * e[0]]
    images = torch.stack([*queries, *gallery])
    pids = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    cams = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    return [{"raw": images, "desensitized": images, "pid": pids, "camid": cams}], 3


def test_both_directions_also_let_the_gallery_images_query():
    loader, num_query = _loader()
    same = lambda x: x  # noqa: E731 (P = O: only the query protocol differs)
    one_way = attacker_rank1(FeaturesAsImages(), loader, num_query, torch.device("cpu"), same, both_directions=False)
    both = attacker_rank1(FeaturesAsImages(), loader, num_query, torch.device("cpu"), same, both_directions=True)
    assert one_way == {"raw->protected": 1.0, "protected->protected": 1.0}
    # 3 queries hit; of the 4 gallery images as queries, the last one (identity 0) finds identity 1's query
    assert both["protected->protected"] == pytest.approx(6 / 7)


def test_attacker_queries_takes_both_or_split_only():
    assert load_config(None, []).MODEL.ATTACKER_QUERIES == "both"
    assert load_config(None, ["MODEL.ATTACKER_QUERIES", "split"]).MODEL.ATTACKER_QUERIES == "split"
    with pytest.raises(ConfigError, match="ATTACKER_QUERIES"):
        load_config(None, ["MODEL.ATTACKER_QUERIES", "all"])
