"""YAML parsing with a bound on what aliases can expand to.

PyYAML builds aliases as shared references, so `safe_load` of a 600-byte "billion laughs" file is quick, but every
consumer that walks the result (validation, `model_dump`, env resolution) walks the expanded tree: seconds of CPU,
then MemoryError. The node graph is composed first, its expanded size counted in time linear in the graph (shared
nodes are counted once each and multiplied, never walked twice), and only a document under the bound is built.
"""

from __future__ import annotations

from typing import Any

import yaml

# libyaml's parser when PyYAML was built with it (several times faster), the same safe constructor either way.
_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Far above any real config (a thousand deployments are ~20,000 nodes), far below what hurts.
MAX_EXPANDED_NODES = 200_000


class YamlBoundError(ValueError):
    """The document would expand past the bound, or an alias refers to a node that contains it."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_size(root: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """Nodes in the document once every alias is expanded; raises YamlBoundError past `limit` or on a cycle."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # started, not finished: exactly the ancestors of the node being visited
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                raise YamlBoundError(f"YAML aliases expand to more than {limit} nodes (an alias bomb?)")
            sizes[key] = total
            open_nodes.discard(key)
            continue
        if key in sizes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YamlBoundError("a YAML alias refers to a node that contains it (recursive alias)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def safe_load_bounded(text: str, limit: int = MAX_EXPANDED_NODES) -> Any:
    """`yaml.safe_load`, refusing documents whose aliases expand past `limit` nodes plus the text's length (a
    document without aliases has fewer nodes than characters, so any size the caller accepts passes). Raises
    yaml.YAMLError, YamlBoundError, or RecursionError (nesting deeper than the composer can follow)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, limit + len(text))
        return loader.construct_document(node)
    finally:
        loader.dispose()
