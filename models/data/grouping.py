"""Groups of cases that must stay together: a source's own groups (patients) joined by
near-duplicate images (perceptual-hash distance at most ``DUPLICATE_DISTANCE``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from models.data.records import Case
from models.data.survey import CaseFacts

# Measured on BUSI: identical and near-identical re-crops sit at <= 6 of 64 bits, distinct
# scans of one device rarely below 10.
DUPLICATE_DISTANCE = 6


@dataclass(frozen=True)
class DuplicatePair:
    a: str
    b: str
    distance: int


@dataclass(frozen=True)
class DuplicateGroup:
    """Near-duplicate images (connected by pairs); ``conflict`` when their labels differ."""

    members: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def conflict(self) -> bool:
        return len(set(self.labels)) > 1


def duplicate_pairs(facts: dict[str, CaseFacts], max_distance: int = DUPLICATE_DISTANCE) -> list[DuplicatePair]:
    """Every pair of cases whose perceptual hashes differ in at most ``max_distance`` bits."""
    ids = sorted(facts)
    hashes = np.array([int(facts[i].phash, 16) for i in ids], dtype=np.uint64)
    pairs: list[DuplicatePair] = []
    for i in range(len(ids) - 1):
        dist = np.bitwise_count(hashes[i] ^ hashes[i + 1:])
        for j in np.nonzero(dist <= max_distance)[0]:
            pairs.append(DuplicatePair(ids[i], ids[i + 1 + j], int(dist[j])))
    return pairs


def _components(ids: list[str], edges: list[tuple[str, str]]) -> np.ndarray:
    index = {c: k for k, c in enumerate(ids)}
    rows = [index[a] for a, _ in edges]
    cols = [index[b] for _, b in edges]
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(ids), len(ids)))
    return connected_components(graph, directed=False)[1]


def duplicate_groups(cases: Sequence[Case], pairs: Sequence[DuplicatePair]) -> list[DuplicateGroup]:
    """Connected components of the duplicate pairs (groups of two or more), largest first."""
    by_id = {c.case_id: c for c in cases}
    ids = sorted(by_id)
    labels = _components(ids, [(p.a, p.b) for p in pairs])
    members: dict[int, list[str]] = {}
    for cid, comp in zip(ids, labels):
        members.setdefault(int(comp), []).append(cid)
    groups = [DuplicateGroup(tuple(m), tuple(by_id[c].label for c in m)) for m in members.values() if len(m) > 1]
    return sorted(groups, key=lambda g: (-len(g.members), g.members))


def assign_groups(cases: Sequence[Case], pairs: Sequence[DuplicatePair]) -> dict[str, str]:
    """Final group id per case: source groups (patients) merged through duplicate pairs.

    A merged group takes the smallest source group id among its members, so ids are stable.
    """
    ids = sorted(c.case_id for c in cases)
    source_group = {c.case_id: c.group_id for c in cases}
    first_of: dict[str, str] = {}
    edges = [(p.a, p.b) for p in pairs]
    for cid in ids:  # chain each case to the first case of its source group
        edges.append((first_of.setdefault(source_group[cid], cid), cid))
    comps = _components(ids, edges)
    name: dict[int, str] = {}
    for cid, comp in zip(ids, comps):
        name[int(comp)] = min(name.get(int(comp), source_group[cid]), source_group[cid])
    return {cid: name[int(comp)] for cid, comp in zip(ids, comps)}
