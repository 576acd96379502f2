"""A tree of port ranges, so a packet reaches its port's leaf chain in a few steps.

Each node holds up to FANOUT `--dport lo:hi` ranges. A wide, shallow tree keeps both the
per-packet work small and the chain nesting low: nf_tables refuses rulesets whose chains
nest more than 16 deep, which a binary tree over 1,000 doors' ports would reach.
"""

from __future__ import annotations

from collections.abc import Callable

FANOUT = 8


def port_tree(ports: list[int], root: str, prefix: str,
              leaf: Callable[[int], str]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Nodes as (chain name, ((dport match, goto target), ...)), root first.

    A node with at most FANOUT ports jumps straight to the leaves; a larger one splits its
    ports into FANOUT runs of consecutive ports, each matched by one --dport lo:hi range.
    """
    nodes: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    _node(sorted(ports), root, prefix, leaf, nodes)
    return nodes


def _node(ports, name, prefix, leaf, nodes) -> None:
    if len(ports) <= FANOUT:
        nodes.append((name, tuple((str(p), leaf(p)) for p in ports)))
        return
    size = -(-len(ports) // FANOUT)
    branches, children = [], []
    for part in (ports[i:i + size] for i in range(0, len(ports), size)):
        if len(part) == 1:
            branches.append((str(part[0]), leaf(part[0])))
            continue
        child = f"{prefix}{part[0]}-{part[-1]}"
        branches.append((f"{part[0]}:{part[-1]}", child))
        children.append((part, child))
    nodes.append((name, tuple(branches)))
    for part, child in children:
        _node(part, child, prefix, leaf, nodes)
