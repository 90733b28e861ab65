"""The `requests-gpus` matchCondition of the webhooks for the kinds table's kinds, written
from the table: the API server sends an object only when one of its pod templates asks for
a GPU by costgate's own rule (`webhook.core.gpu_names`), wherever the kind keeps them.

`manifests/base/webhooks.yaml` embeds what `python -m webhook.kinds_cel` prints;
tests/test_kinds_webhooks.py checks that it does and evaluates it. Change the table, then
paste the output again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from .core.gpu_names import cel_claims_test, cel_test
from .core.kindspec import KindSpec, TemplateSpec, split_path

__all__ = ["kind_condition", "pod_spec_condition", "requests_gpus"]

_TEST = cel_test("r")


def _container(c: str) -> str:
    return (
        f"has({c}.resources) && ("
        f"(has({c}.resources.limits) && {c}.resources.limits.exists(r, {_TEST})) || "
        f"(has({c}.resources.requests) && {c}.resources.requests.exists(r, {_TEST})))"
    )


def pod_spec_condition(spec: str) -> str:
    """CEL: the PodSpec at expression `spec` has a container or init container asking for
    a GPU in its limits or requests, or names DRA resource claims (their count is in the
    claim, so the pod is sent as pods with claims are)."""
    return (
        f"(has({spec}.containers) && {spec}.containers.exists(c, {_container('c')})) || "
        f"(has({spec}.initContainers) && {spec}.initContainers.exists(c, {_container('c')})) || "
        f"{cel_claims_test(spec)}"
    )


def _element(entry: TemplateSpec, element: str) -> str:
    guards: list[str] = []
    if entry.pod_spec:
        spec = element if entry.pod_spec == "." else f"{element}.{entry.pod_spec}"
        if spec != element:
            guards.append(f"has({spec})")
    else:
        spec = element
        for token in (*split_path(entry.template), "spec"):
            spec = f"{spec}.{token}"
            guards.append(f"has({spec})")
    tests = [f"({pod_spec_condition(spec)})"]
    tests += [
        f"(has({element}.{key}) && {_container(f'{element}.{key}')})" for key in entry.containers
    ]
    test = tests[0] if len(tests) == 1 else "(" + " || ".join(tests) + ")"
    return " && ".join([*guards, test])


def _walk(tokens: tuple[str, ...], current: str, depth: int, entry: TemplateSpec) -> str:
    if not tokens:
        return _element(entry, current)
    token, rest = tokens[0], tokens[1:]
    if token == "*":
        key = f"k{depth}"
        return f"{current}.exists({key}, {_walk(rest, f'{current}[{key}]', depth + 1, entry)})"
    if token == "[*]":
        item = f"e{depth}"
        return f"{current}.exists({item}, {_walk(rest, item, depth + 1, entry)})"
    nxt = f"{current}.{token}"
    return f"has({nxt}) && {_walk(rest, nxt, depth, entry)}"


def kind_condition(spec: KindSpec) -> str:
    """CEL: an object of this kind has a pod template asking for a GPU."""
    return " ||\n  ".join(
        f"({_walk(split_path(entry.each), 'object', 0, entry)})" for entry in spec.templates
    )


def requests_gpus(specs: Iterable[KindSpec]) -> str:
    """The requests-gpus expression for a webhook sent these kinds: per kind, by the
    request's group and kind (Volcano's `jobs` are told from batch/v1's by group)."""
    parts = [
        f"(request.kind.group == '{s.group}' && request.kind.kind == '{s.kind}' && (\n  "
        f"{kind_condition(s)}))"
        for s in specs
    ]
    return " ||\n".join(parts) + "\n"


if __name__ == "__main__":  # pragma: no cover - prints what to paste into the manifests
    from .tables import load_kinds

    table = load_kinds()
    wanted = sys.argv[1:] or [f"{g}/{k}" for g, k in table]
    print(requests_gpus(table[tuple(w.rsplit("/", 1))] for w in wanted))  # type: ignore[index]
