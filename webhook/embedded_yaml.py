"""YAML that users embed in their objects (Argo's podSpecPatch), parsed for the core: safe,
fast where libyaml is installed, and refusing what can blow up a small document.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["EmbeddedYamlLoader", "parse_embedded_yaml"]


class EmbeddedYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML from users' objects: libyaml where installed (the pure-Python parser takes
    ~10 s a megabyte, on the admission path), and no aliases or merge keys: a few hundred
    bytes of nested aliases expand to a billion nodes (billion laughs)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects:  # a second reference: an alias
            raise yaml.constructor.ConstructorError(
                None, None, "anchors and aliases are not read", node.start_mark
            )
        return super().construct_object(node, deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # merging copies the merged keys before anything is constructed: nested `<<` of
        # aliases grow tenfold a level with nothing constructed twice
        if any(key.tag == "tag:yaml.org,2002:merge" for key, _ in node.value):
            raise yaml.constructor.ConstructorError(
                None, None, "merge keys (<<) are not read", node.start_mark
            )
        super().flatten_mapping(node)


def parse_embedded_yaml(text: str) -> Any:
    """YAML embedded in objects (Argo podSpecPatch), parsed for the core."""
    return yaml.load(text, Loader=EmbeddedYamlLoader)
