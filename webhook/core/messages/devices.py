"""Sentences about Dynamic Resource Allocation: the DeviceClasses and claims (resource.k8s.io)
through which a pod gets GPUs without asking for a GPU resource."""

from __future__ import annotations

from collections.abc import Sequence

from .text import money, quote, warning

__all__ = [
    "claim_devices",
    "claim_not_found",
    "unbounded_devices",
    "unknown_device_class_denied",
    "unknown_device_class_priced",
]


def _classes(names: Sequence[str]) -> tuple[str, str, str]:
    """("DeviceClass "x" is", "its", "it"), or the plural."""
    listed = ", ".join(quote(n) for n in names)
    if len(names) == 1:
        return f"DeviceClass {listed} is", "its", "it"
    return f"DeviceClasses {listed} are", "their", "them"


def _add(it: str) -> str:
    return (
        f"add {it} under device_classes in the pricing table (a GPU type, or like: a GPU resource)"
    )


def claim_not_found(kind: str, name: str, claim: str) -> str:
    return (
        f"the pod's claim {quote(claim)} names {kind} {quote(name)}, which costgate cannot "
        f"read, so its devices are not priced; create the {kind} first, or estimate both "
        f"together with costgate estimate -f claim.yaml -f pod.yaml"
    )


def unbounded_devices(where: str, device_class: str) -> str:
    return (
        f"{where} asks for every device of DeviceClass {quote(device_class)} "
        f"(allocationMode: All), and the pricing table does not say how many that can be; "
        f"ask for a count (allocationMode: ExactCount), or set "
        f"device_classes.{device_class}.max_devices in the pricing table"
    )


def unknown_device_class_denied(names: Sequence[str], namespace: str) -> str:
    classes, _, it = _classes(names)
    return (
        f"{classes} not in the pricing table, so the GPUs a claim gets from {it} cannot be "
        f"priced, and namespace {quote(namespace)} does not price unknown GPUs; {_add(it)}"
    )


def unknown_device_class_priced(names: Sequence[str], gpu: str, usd_per_hour: float) -> str:
    classes, its, it = _classes(names)
    return warning(
        f"{classes} not in the pricing table; {its} devices are priced as {gpu} "
        f"({money(usd_per_hour)}/h each), the dearest GPU; {_add(it)}"
    )


def claim_devices(kind: str, name: str, lines: Sequence[tuple[int, str, float]]) -> str:
    """`lines`: (devices, GPU type, $/h each) per GPU type the claim asks for."""
    devices = " + ".join(f"{count} × {gpu}" for count, gpu, _ in lines)
    per_hour = sum(count * usd for count, _, usd in lines)
    return warning(
        f"{kind} {quote(name)} asks for {devices} (up to {money(per_hour)}/h); the pods that "
        f"use it are priced with it"
    )
