"""A binary tree of port ranges, so a packet reaches its port's leaf chain in log2(n) steps."""

from __future__ import annotations

from collections.abc import Callable

LEAF_FANOUT = 4


def port_tree(ports: list[int], root: str, prefix: str,
              leaf: Callable[[int], str]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Nodes as (chain name, ((dport match, goto target), ...)), root first.

    A node with at most LEAF_FANOUT ports jumps straight to the leaves; a larger one splits
    its ports in two halves, each matched by one --dport lo:hi range.
    """
    nodes: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    _node(sorted(ports), root, prefix, leaf, nodes)
    return nodes


def _node(ports, name, prefix, leaf, nodes) -> None:
    if len(ports) <= LEAF_FANOUT:
        nodes.append((name, tuple((str(p), leaf(p)) for p in ports)))
        return
    half = len(ports) // 2
    branches = []
    children = []
    for part in (ports[:half], ports[half:]):
        if len(part) == 1:
            branches.append((str(part[0]), leaf(part[0])))
            continue
        child = f"{prefix}{part[0]}-{part[-1]}"
        branches.append((f"{part[0]}:{part[-1]}", child))
        children.append((part, child))
    nodes.append((name, tuple(branches)))
    for part, child in children:
        _node(part, child, prefix, leaf, nodes)
