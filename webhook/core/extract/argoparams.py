"""Argo's `{{...}}` parameters, as far as they are known at admission.

Argo fills in a template by replacing text (util/template.Replace over the template's JSON,
keys included) before it builds the template's pod, so a parameter can hide GPUs anywhere: a
resource name, a quantity, a whole podSpecPatch. Known here, and filled in the same way:
`{{workflow.parameters.X}}` from `spec.arguments` (`value`, else `default`; a
workflowTemplateRef's arguments are merged under the Workflow's), the Workflow's own
`workflow.name`, `workflow.namespace`, `workflow.labels.X` and `workflow.annotations.X`, and
`{{inputs.parameters.X}}` from what the calling step or task passes (else the input's
`value`, else its `default`). Everything else (`{{item}}`, step outputs, `valueFrom`,
expressions `{{=...}}`) is known only when the workflow runs and stays as written; the pod
reader refuses it where it can carry resources.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["NO_PARAMETERS", "Scope", "inputs_for", "substitute", "tag_in", "workflow_scope"]

Scope = Mapping[str, str]  # tag (as written between the braces, trimmed) -> its value
NO_PARAMETERS: Scope = {}
# Argo trims the text between the braces; an expression starts with "=" and is not looked up.
_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def _value(parameter: Mapping[str, Any]) -> str | None:
    """A parameter's value as Argo reads it (`value`, else `default`); None when only a
    ConfigMap (`valueFrom`) or a later step can give it."""
    if parameter.get("valueFrom") is not None:
        return None  # Argo reads valueFrom first, at run time
    for key in ("value", "default"):
        value = parameter.get(key)
        if value is not None:
            return _text(value)
    return None


def _text(value: Any) -> str | None:
    """A parameter value as Argo's AnyString holds it (a string, or a number or bool as
    written); None for a list or map, which Argo refuses."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _parameters(holder: Any) -> list[Mapping[str, Any]]:
    """The named parameters of an `arguments` or `inputs` block (others are skipped: Argo's
    own validation refuses them)."""
    if not isinstance(holder, Mapping):
        return []
    listed = holder.get("parameters")
    if not isinstance(listed, list):
        return []
    return [p for p in listed if isinstance(p, Mapping) and isinstance(p.get("name"), str)]


def workflow_scope(
    spec: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    labels: Mapping[str, Any],
    annotations: Mapping[str, Any],
) -> dict[str, str]:
    """The global parameters of a WorkflowSpec as known at admission (`name` empty: not
    known yet, as with generateName)."""
    scope: dict[str, str] = {"workflow.namespace": namespace}
    if name:
        scope["workflow.name"] = name
    for prefix, values in (("workflow.labels.", labels), ("workflow.annotations.", annotations)):
        for key, value in values.items():
            if isinstance(key, str) and isinstance(value, str):
                scope[prefix + key] = value
    for parameter in _parameters(spec.get("arguments")):
        value = _value(parameter)
        if value is not None:
            value = substitute(value, scope)
            if "{{" not in value:  # else known only at run time: left as written
                scope[f"workflow.parameters.{parameter['name']}"] = value
    return scope


def inputs_for(
    template: Mapping[str, Any], arguments: Any, caller: Scope, globals_: Scope
) -> tuple[tuple[str, str], ...]:
    """The `inputs.parameters.X` values one call of `template` gets, in its order: what the
    call passes (filled in from the caller's scope), else the input's value, else its
    default (filled in from the globals, as Argo does). An input nothing gives a value is
    left out, so its tags stay as written."""
    declared = _parameters(template.get("inputs"))
    if not declared:
        return ()
    passed = {p["name"]: p for p in _parameters(arguments)}
    found: list[tuple[str, str]] = []
    for parameter in declared:
        name = parameter["name"]
        argument = passed.get(name)
        value: str | None
        if argument is not None and argument.get("value") is not None:
            value = _text(argument["value"])
            if value is not None:
                value = substitute(value, caller)
        elif argument is not None and argument.get("valueFrom") is not None:
            value = None
        else:
            value = _value(parameter)
            if value is not None:
                value = substitute(value, globals_)
        if value is not None and "{{" not in value:  # a step's outputs, {{item}}: later
            found.append((f"inputs.parameters.{name}", value))
    return tuple(found)


def substitute(value: Any, scope: Scope) -> Any:
    """`value` with every known `{{tag}}` in its strings (map keys included) replaced; the
    same object where nothing changes, so unchanged parts keep their identity."""
    if isinstance(value, str):
        if "{{" not in value or not scope:
            return value
        filled = _TAG.sub(lambda m: scope.get(m.group(1).strip(), m.group(0)), value)
        return value if filled == value else filled
    if isinstance(value, dict):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = substitute(key, scope) if isinstance(key, str) else key
            new_item = substitute(item, scope)
            changed |= new_key is not key or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    if isinstance(value, list):
        items = [substitute(item, scope) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def tag_in(value: Any) -> str | None:
    """The first `{{...}}` left in a string, or None."""
    if isinstance(value, str) and "{{" in value:
        found = _TAG.search(value)
        return found.group(0) if found else value[value.index("{{") :]
    return None
