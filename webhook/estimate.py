"""`costgate estimate`: manifests in, the webhook's decision per object out, offline.

Each object becomes the Request the API server would send for `kubectl create`, and goes
through the same `evaluate` as the webhook.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, BinaryIO

import orjson
import yaml

from .core import messages
from .core.config import ClaimLookup, TemplateLookup
from .core.engine import Config, evaluate
from .core.types import ANNOTATION_APPROVAL, NOBODY, Request, Requester
from .core.verdict import Decision

__all__ = [
    "ManifestError",
    "claim_lookup",
    "estimate_rows",
    "read_manifests",
    "render_json",
    "render_table",
    "template_lookup",
    "with_approval",
]


class ManifestError(ValueError):
    """Input that is not a manifest (exit code 2)."""


def _documents(raw: bytes, origin: str) -> list[Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{origin}: not UTF-8 text (byte {exc.start})") from None
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        try:  # JSON that YAML refuses, e.g. indented with tabs (jq --tab)
            return [orjson.loads(raw)]
        except orjson.JSONDecodeError:
            raise ManifestError(f"{origin}: not valid YAML or JSON: {exc}") from None


def read_manifests(stream: BinaryIO, origin: str) -> list[dict[str, Any]]:
    """Every object in a multi-document YAML or JSON stream; `List` kinds are unpacked."""
    docs = _documents(stream.read(), origin)
    objects: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(f"{origin}: document {index + 1} is not an object")
        items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
        for obj in items or ():
            if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind"):
                raise ManifestError(f"{origin}: document {index + 1} has no apiVersion and kind")
            objects.append(obj)
    if not objects:
        raise ManifestError(f"{origin}: no objects found")
    return objects


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's metadata; empty when it has none, or none that is a mapping."""
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _request(obj: dict[str, Any], namespace: str, requester: Requester) -> Request:
    metadata = _metadata(obj)
    api_version = str(obj["apiVersion"])
    return Request(
        uid="offline",
        operation="CREATE",
        group=api_version.rpartition("/")[0],
        kind=str(obj["kind"]),
        namespace=str(metadata.get("namespace") or namespace),
        name=str(metadata.get("name") or ""),
        obj=obj,
        username=requester.username,
        groups=requester.groups,
        extra=requester.extra,
    )


def _count(value: float) -> int | None:
    """A GPU count for output: whole, or None when nothing bounds it."""
    return None if math.isinf(value) else int(value)


def _row(request: Request, decision: Decision) -> dict[str, Any]:
    estimate = decision.estimate
    name = request.name or (decision.workload.display_name if decision.workload else "")
    return {
        "kind": request.kind,
        "namespace": request.namespace,
        "name": name,
        "allowed": decision.allowed,
        "mode": decision.mode,
        "cost_usd": estimate.usd if estimate and not math.isinf(estimate.usd) else 0.0,
        "per_month": estimate.per_month if estimate else False,
        "gpus": _count(decision.workload.total_gpus) if decision.workload else 0,
        "max_runtime_seconds": decision.runtime_seconds,
        "deadline_seconds": decision.deadline,
        "breakdown": [
            {
                "count": line.units,
                "gpu_type": line.gpu_type,
                "label": line.label,
                "usd_per_hour": round(line.usd_per_hour, 4),
                "resolved": line.resolved,
            }
            for line in (estimate.lines if estimate else ())
        ],
        "reasons": [{"code": r.code, "message": r.message} for r in decision.reasons],
        "warnings": [w.removeprefix(messages.WARNING_PREFIX) for w in decision.warnings],
    }


_TEMPLATE_KINDS = {"WorkflowTemplate": False, "ClusterWorkflowTemplate": True}


def template_lookup(objects: Iterable[dict[str, Any]], namespace: str) -> TemplateLookup:
    """Resolve workflowTemplateRef/templateRef against the WorkflowTemplates given."""
    specs: dict[tuple[str, str, bool], Any] = {}
    for obj in objects:
        cluster = _TEMPLATE_KINDS.get(str(obj.get("kind")))
        if cluster is None or not str(obj.get("apiVersion", "")).startswith("argoproj.io/"):
            continue
        metadata = _metadata(obj)
        scope = "" if cluster else str(metadata.get("namespace") or namespace)
        specs[(scope, str(metadata.get("name") or ""), cluster)] = obj.get("spec")

    def lookup(ns: str, name: str, cluster: bool) -> Any:
        return specs.get(("" if cluster else ns, name, cluster))

    return lookup


_CLAIM_KINDS = ("ResourceClaim", "ResourceClaimTemplate")


def claim_lookup(objects: Iterable[dict[str, Any]], namespace: str) -> ClaimLookup:
    """Resolve the DRA claims and claim templates pods name against the objects given."""
    specs: dict[tuple[str, str, str], Any] = {}
    for obj in objects:
        kind = str(obj.get("kind"))
        if kind not in _CLAIM_KINDS or not str(obj.get("apiVersion", "")).startswith(
            "resource.k8s.io/"
        ):
            continue
        metadata = _metadata(obj)
        key = (kind, str(metadata.get("namespace") or namespace), str(metadata.get("name") or ""))
        specs[key] = obj.get("spec")

    def lookup(kind: str, ns: str, name: str) -> Any:
        return specs.get((kind, ns, name))

    return lookup


def with_approval(obj: dict[str, Any], token: str) -> dict[str, Any]:
    """The object as if annotated with the approval token."""
    metadata = dict(obj.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION_APPROVAL: token}
    return {**obj, "metadata": metadata}


def estimate_rows(
    objects: Iterable[dict[str, Any]],
    *,
    config: Config,
    namespace: str = "default",
    now: float = 0.0,
    requester: Requester = NOBODY,
) -> list[dict[str, Any]]:
    """One row per object: the webhook's decision on it, as submitted by `requester` (whom
    an approval's no-self-approval rule compares with the approver)."""
    objects = list(objects)
    if config.lookup is None:
        config = replace(config, lookup=template_lookup(objects, namespace))
    if config.claims is None:
        config = replace(config, claims=claim_lookup(objects, namespace))
    rows = []
    for obj in objects:
        request = _request(obj, namespace, requester)
        rows.append(_row(request, evaluate(request, config=config, now=now)))
    return rows


def render_json(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode()


def _cells(row: dict[str, Any]) -> list[str]:
    decision = ("denied" if not row["allowed"] else "warned") if row["reasons"] else "allowed"
    cost = messages.money(row["cost_usd"]) + ("/month" if row["per_month"] else "")
    runtime = row["max_runtime_seconds"]
    return [
        row["kind"],
        row["namespace"],
        row["name"],
        decision,
        cost,
        str(row["gpus"]),
        "-" if runtime is None else messages.format_duration(runtime),
    ]


def _lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    header = ["KIND", "NAMESPACE", "NAME", "DECISION", "COST", "GPUS", "RUNTIME"]
    table = [header] + [_cells(row) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for index, cells in enumerate(table):
        yield "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        if index == 0:
            continue
        row = rows[index - 1]
        for reason in row["reasons"]:
            yield f"    {reason['code']}: {reason['message']}"
        for warning in row["warnings"]:
            yield f"    warning: {warning}"


def render_table(rows: list[dict[str, Any]]) -> str:
    return "\n".join(_lines(rows))
