"""Workload kinds described as data: where an object of some API group and kind keeps its
pod templates, how many pods each one runs, whether it is batch or serving work, and where
its deadline and suspend flag live.

Operators we have never heard of are described the same way (policy `kinds:`), so one
generic reader (`extract/table.py`) prices them all. Paths are dotted field names from the
object's root; `*` walks every value of a map (a PyTorchJob's replica specs by role) and
`[*]` every item of a list (a RayCluster's worker groups). Inside a template entry, paths
are relative to the element the entry's `each` path reached, unless they start with `$.`
(from the object's root).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

__all__ = ["Factor", "KindSpec", "TemplateSpec", "split_path"]


class Factor(NamedTuple):
    """A count that multiplies a template's replicas (hosts per group, pods per Job), read
    at `path`: `default` when unset, less `minus` (unless `minus_unless` is unset: a
    LeaderWorkerSet's workers are size - 1 only when a separate leader template exists)."""

    path: str
    default: int = 1
    minus: int = 0
    minus_unless: str = ""


class TemplateSpec(NamedTuple):
    """One pod template, or a set of them (a wildcard path), in objects of a kind."""

    label: str  # names the pods in estimates; "" for a map wildcard: the map key
    each: str  # path of the element(s) holding the template
    template: str = "template"  # the PodTemplateSpec in the element ("" with pod_spec)
    pod_spec: str = ""  # the element holds a PodSpec here instead ("." : the element itself)
    containers: tuple[str, ...] = ()  # keys of single extra containers (KServe's `model`)
    replicas: str = ""  # path of the replica count ("" : default_replicas)
    default_replicas: int = 1
    max_replicas: str = ""  # an autoscaler's maximum, priced instead of replicas when set
    autoscaling: str = ""  # path of a flag: max_replicas counts only when it is true
    min_replicas: str = ""  # when no maximum is set, at least this many
    count_annotation: str = ""  # an annotation giving the count (DaemonSet: max nodes)
    unbounded: bool = False  # no count known without count_annotation: denied
    factors: tuple[Factor, ...] = ()


class KindSpec(NamedTuple):
    """How costgate reads objects of one API group and kind."""

    group: str
    kind: str
    workload_class: Literal["batch", "serving"]
    templates: tuple[TemplateSpec, ...]
    deadline: str = ""  # path of the run-time limit in seconds, read and set ("" : none)
    suspend: str = ""  # path of a flag that stops every pod while true
    source: str = ""  # which file described it (errors and README)
    resource: str = ""  # its plural (`deployments`): how a scale subresource names it
    scale: str = ""  # the replicas its `scale` subresource sets (`spec.replicas`)


def split_path(path: str) -> tuple[str, ...]:
    """`spec.workerGroupSpecs[*].template` -> ("spec", "workerGroupSpecs", "[*]", "template")."""
    tokens: list[str] = []
    for part in path.split("."):
        if part.endswith("[*]"):
            if part[:-3]:
                tokens.append(part[:-3])
            tokens.append("[*]")
        elif part:
            tokens.append(part)
    return tuple(tokens)


Kinds = Mapping[tuple[str, str], KindSpec]
