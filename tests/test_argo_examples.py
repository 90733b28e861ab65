"""Every Argo Workflows example (tests/fixtures/argo-examples) through `costgate estimate`.

None of the examples asks for a GPU, so each must come out allowed at $0 with no attribution
labels, except the few denied on purpose below. Examples whose templates live in another
file get that file along with them, as `argo template create` would have put it in the
cluster first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.config import env_without_costgate
from tests.support.paths import FIXTURES, REPO
from webhook.core.engine import Config
from webhook.estimate import estimate_rows, read_manifests
from webhook.tables import load_config

EXAMPLES = FIXTURES / "argo-examples"
FILES = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml"))

CLUSTER_TEMPLATES = "cluster-workflow-template/clustertemplates.yaml"
NAMESPACED_TEMPLATES = "workflow-template/templates.yaml"
# The examples that run templates defined in another file, and that file.
NEEDS_TEMPLATES = {
    "dag-inline-cronworkflow.yaml": "dag-inline-workflowtemplate.yaml",
    "cluster-workflow-template/cluster-wftmpl-dag.yaml": CLUSTER_TEMPLATES,
    "cluster-workflow-template/mixed-cluster-namespaced-wftmpl-steps.yaml": CLUSTER_TEMPLATES,
    "cluster-workflow-template/workflow-template-ref.yaml": CLUSTER_TEMPLATES,
    "cluster-workflow-template/workflow-template-ref-with-entrypoint-arg-passing.yaml": (
        CLUSTER_TEMPLATES
    ),
    "workflow-template/dag.yaml": NAMESPACED_TEMPLATES,
    "workflow-template/hello-world.yaml": NAMESPACED_TEMPLATES,
    "workflow-template/retry-with-steps.yaml": NAMESPACED_TEMPLATES,
    "workflow-template/steps.yaml": NAMESPACED_TEMPLATES,
    "workflow-template/workflow-template-ref.yaml": NAMESPACED_TEMPLATES,
    "workflow-template/workflow-template-ref-with-entrypoint-arg-passing.yaml": (
        NAMESPACED_TEMPLATES
    ),
}
DENIED = {
    # podSpecPatch sets resources from a run-time parameter: its GPUs cannot be known, so
    # they are GPU work of unknown size, which must carry attribution labels too
    "pod-spec-from-previous-step.yaml": {"invalid-gpu-request", "missing-labels"},
    # also calls the namespaced workflow-template-print-message, which lives elsewhere
    "cluster-workflow-template/mixed-cluster-namespaced-wftmpl-steps.yaml": {"template-not-found"},
}


@pytest.fixture(scope="module")
def cli_config() -> Config:
    """The configuration `costgate estimate` runs with (bundled tables, YAML podSpecPatch)."""
    return load_config()


def objects(name: str) -> list[dict[str, Any]]:
    with (EXAMPLES / name).open("rb") as stream:
        return read_manifests(stream, name)


def rows_for(names: list[str], config: Config) -> list[dict[str, Any]]:
    """The rows of the last file's objects, estimated together with the files before it."""
    given = [objects(name) for name in names]
    rows = estimate_rows([obj for group in given for obj in group], config=config)
    return rows[len(rows) - len(given[-1]) :]


def codes(row: dict[str, Any]) -> set[str]:
    return {reason["code"] for reason in row["reasons"]}


def test_every_example_is_a_test_case() -> None:
    assert len(FILES) > 200
    assert set(NEEDS_TEMPLATES) | set(DENIED) <= set(FILES)
    assert set(NEEDS_TEMPLATES.values()) <= set(FILES)


def test_the_examples_carry_no_attribution_labels() -> None:
    # What makes "labels are not required for GPU-free workflows" worth checking below.
    workflows = [
        obj
        for name in FILES
        for obj in objects(name)
        if obj["kind"] in ("Workflow", "CronWorkflow", "WorkflowTemplate")
    ]
    assert len(workflows) > 150
    assert not any("owner" in (obj["metadata"].get("labels") or {}) for obj in workflows)


@pytest.mark.parametrize("name", FILES)
def test_example(name: str, cli_config: Config) -> None:
    templates = NEEDS_TEMPLATES.get(name)
    rows = rows_for([templates, name] if templates else [name], cli_config)
    assert rows
    for row in rows:
        assert row["cost_usd"] == 0
        assert row["gpus"] == 0
    denied = DENIED.get(name)
    if denied is None:
        assert all(row["allowed"] and row["reasons"] == [] for row in rows), rows
    else:
        assert [row["allowed"] for row in rows] == [False]
        assert codes(rows[0]) == denied


def test_a_podspecpatch_from_a_previous_step_names_the_patch(cli_config: Config) -> None:
    [row] = rows_for(["pod-spec-from-previous-step.yaml"], cli_config)
    reason = row["reasons"][0]
    assert reason["message"].startswith("spec.templates[2].podSpecPatch cannot be read")
    assert '"{{inputs.parameters.resources}}"' in reason["message"]


@pytest.mark.parametrize("name", sorted(NEEDS_TEMPLATES))
def test_an_example_without_its_templates_file_is_template_not_found(
    name: str, cli_config: Config
) -> None:
    rows = rows_for([name], cli_config)
    assert [row["allowed"] for row in rows] == [False]
    assert codes(rows[0]) == {"template-not-found"}
    assert rows[0]["cost_usd"] == 0


def test_the_mixed_example_resolves_with_both_template_files(cli_config: Config) -> None:
    rows = rows_for(
        [
            CLUSTER_TEMPLATES,
            NAMESPACED_TEMPLATES,
            "cluster-workflow-template/mixed-cluster-namespaced-wftmpl-steps.yaml",
        ],
        cli_config,
    )
    assert [(row["allowed"], row["reasons"], row["cost_usd"]) for row in rows] == [(True, [], 0)]


def test_the_cli_estimates_examples_with_their_templates_as_a_process() -> None:
    files = [
        CLUSTER_TEMPLATES,
        "cluster-workflow-template/cluster-wftmpl-dag.yaml",
        "dag-diamond.yaml",
        "pod-spec-from-previous-step.yaml",
    ]
    args = [arg for name in files for arg in ("-f", str(EXAMPLES / name))]
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "estimate", *args, "-o", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env_without_costgate(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # the podSpecPatch example is denied
    rows = json.loads(result.stdout)
    assert [row["kind"] for row in rows] == ["ClusterWorkflowTemplate"] * 5 + ["Workflow"] * 3
    assert [row["allowed"] for row in rows] == [True] * 7 + [False]
    assert [r["code"] for r in rows[-1]["reasons"]] == ["invalid-gpu-request", "missing-labels"]
    assert all(row["cost_usd"] == 0 for row in rows)
