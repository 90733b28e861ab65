"""Which extended resource names request GPUs: the one rule that both costgate's classifier
and the API server's filter (the `requests-gpus` matchConditions of
`manifests/base/webhooks.yaml`) apply, so that nothing costgate would price is never sent.

A resource name requests GPUs when, with ASCII letters folded to lower case, it is

- any resource of the groups `nvidia.com` and `amd.com` (`nvidia.com/gpu`, vGPU profiles
  such as `nvidia.com/GRID_A100-40C`, passthrough names such as
  `nvidia.com/GH100_H100_SXM5_80GB`, MIG slices `nvidia.com/mig-1g.10gb`, `amd.com/gpu`);
- Intel's `gpu.intel.com/i915` or `gpu.intel.com/xe` (not the group's `millicores` or
  `memory.max` shares of them);
- any other name whose part after the first `/` contains `gpu` or starts with `mig-`
  (`example.com/GPU`, `example.com/vgpu-8q`, `example.com/mig-1g.5gb`).

The rule is one regular expression, `PATTERN`, anchored at both ends, in the syntax RE2
(CEL's `matches`) and Python's `re` read alike. The manifests embed it verbatim as
`r.lowerAscii().matches('<PATTERN>')`; `tests/test_bypass_match_conditions.py` checks that
they do and evaluates them. Every resource the pricing table lists must match it
(`webhook.table_schema` refuses a table otherwise), since the API server cannot read the
table. Change the rule here, then paste it into every `requests-gpus` condition.
"""

from __future__ import annotations

import re

__all__ = ["PATTERN", "cel_claims_test", "cel_test", "is_gpu_name"]

# No backslashes ([.] for a dot), so it reads the same inside a CEL string literal; (?s):
# a dot matches any character, so that both engines read a name the same way whatever it holds.
PATTERN = (
    "(?s)^(?:"
    "(?:nvidia|amd)[.]com/.+"  # every resource of these groups
    "|gpu[.]intel[.]com/(?:i915|xe)"  # Intel's whole GPUs, by name
    "|[^/]*/(?:mig-.*|.*gpu.*)"  # after the first slash: mig-..., or gpu anywhere
    ")$"
)

_MATCH = re.compile(PATTERN).fullmatch  # fullmatch: Python's $ also matches before a final newline
# CEL's lowerAscii() folds A-Z only; str.lower() would also fold other scripts.
_LOWER_ASCII = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def is_gpu_name(name: str) -> bool:
    """Whether the extended resource `name` requests GPUs (the rule above). Not memoized
    here: the price table remembers its answers per name."""
    # str.translate is slow (a microsecond); lower() is the same fold on ASCII names
    folded = name.lower() if name.isascii() else name.translate(_LOWER_ASCII)
    return _MATCH(folded) is not None


def cel_test(variable: str) -> str:
    """The CEL expression that is true when the string `variable` names a GPU resource, as
    each `requests-gpus` matchCondition writes it."""
    return f"{variable}.lowerAscii().matches('{PATTERN}')"


def cel_claims_test(spec: str) -> str:
    """The CEL expression that is true when the pod spec `spec` names DRA resource claims,
    as each `requests-gpus` matchCondition writes it: a pod gets GPUs through a claim
    without naming any GPU resource (the count is in the claim), so every such pod is sent."""
    return f"(has({spec}.resourceClaims) && size({spec}.resourceClaims) > 0)"
