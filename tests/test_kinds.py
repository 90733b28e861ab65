"""Every workload kind ML teams submit is priced at submission, through the kinds table
(issue #14).

`costgate estimate` said "allowed $0.00" for 7 of 12 everyday ML workloads: Deployments and
the ML operators' kinds were not read at all, and in a cluster their pods were then denied
one by one inside the controllers. The kinds are now described as data
(`webhook/defaults/kinds.yaml`, policy `kinds:`) and read by one generic reader; these tests
walk every upstream sample in `tests/fixtures/ml-operators/` and check costs by hand.

Prices (pricing/default.yaml): a GPU nothing pins is priced as the dearest it could be, gb200
at $27.04/h; h100-80gb $6.88, l4 $1.6688, a10g $2.036, t4 $0.978 per hour. Batch work runs
the 12 h default, serving work 730 h a month.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.config import policy_data
from tests.support.paths import ADMISSION_KINDS, ML_OPERATORS
from webhook.cli import main
from webhook.core.gpu_names import is_gpu_name
from webhook.core.kindspec import split_path
from webhook.tables import TableError, load_kinds, parse_policy

GB200, H100, L4, A10G, T4 = 27.04, 6.88, 1.6688, 2.036, 0.978
MONTH, DAY = 730, 12  # hours: serving per month, batch at the default runtime

# Kinds with upstream GPU samples that the table does not price yet (see README).
NOT_YET = {"TrainJob", "ClusterTrainingRuntime", "TrainingRuntime"}


def _estimate(
    capsys: pytest.CaptureFixture[str], *paths: Path, extra: list[str] | None = None
) -> list[dict[str, Any]]:
    capsys.readouterr()
    args = ["estimate", *(a for p in paths for a in ("-f", str(p))), "-o", "json"]
    code = main([*args, *(extra or [])])
    assert code in (0, 1)  # 2 would be input costgate cannot read
    return json.loads(capsys.readouterr().out)


def _requests_gpus(node: Any) -> bool:
    """Whether any limits/requests/resourcesPerNode in the object names a GPU, > 0."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (
                key in ("limits", "requests")
                and isinstance(value, dict)
                and any(is_gpu_name(str(r)) and str(q) not in ("0", "") for r, q in value.items())
            ):
                return True
            if _requests_gpus(value):
                return True
    elif isinstance(node, list):
        return any(_requests_gpus(item) for item in node)
    return False


def _samples() -> list[Path]:
    return sorted(ML_OPERATORS.glob("*/examples/**/*.yaml"))


def _objects(path: Path) -> list[dict[str, Any]]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except yaml.YAMLError:
        return []  # kserve's torchserve/gpu.yaml is invalid YAML as shipped


def test_every_upstream_gpu_sample_is_priced_and_none_crashes(capsys):
    """Each object of every upstream sample that requests a GPU is priced above $0 or
    refused with a reason; none is allowed for nothing, none makes costgate fail."""
    priced, seen_kinds = 0, set()
    for path in _samples():
        objects = _objects(path)
        if not objects:
            continue
        rows = _estimate(capsys, path)
        assert len(rows) == len(objects), path
        for obj, row in zip(objects, rows, strict=True):
            if not _requests_gpus(obj) or obj["kind"] in NOT_YET:
                continue
            where = f"{path.relative_to(ML_OPERATORS)}: {obj['kind']}"
            assert row["gpus"] > 0, where
            assert row["cost_usd"] > 0 or row["reasons"], where
            priced += 1
            seen_kinds.add(obj["kind"])
    assert priced >= 35
    assert seen_kinds >= {
        "PyTorchJob",
        "TFJob",
        "PaddleJob",
        "RayJob",
        "RayCluster",
        "RayService",
        "LeaderWorkerSet",
        "InferenceService",
        "LLMInferenceService",
        "Job",  # Volcano's (and kueue's batch/v1 sample)
        "Deployment",
    }


def _row(capsys, path: Path, kind: str, extra: list[str] | None = None) -> dict[str, Any]:
    rows = [r for r in _estimate(capsys, path, extra=extra) if r["kind"] == kind]
    assert len(rows) == 1, rows
    return rows[0]


EXAMPLES = {
    # Kubeflow training jobs: Σ replica specs × 12 h.
    "pytorch_job_mnist_nccl": (  # Master 1 + Worker 1, 1 GPU each (JSON numbers)
        "training-operator/examples/pytorch/mnist/v1/pytorch_job_mnist_nccl.yaml",
        "PyTorchJob",
        2,
        2 * GB200 * DAY,
    ),
    "pytorch_deepspeed_demo": (  # Master 1 + Worker 1 × 1 GPU
        "training-operator/examples/pytorch/deepspeed-demo/pytorch_deepspeed_demo.yaml",
        "PyTorchJob",
        2,
        2 * GB200 * DAY,
    ),
    "multi_worker_tfjob": (  # Worker 2 × 1 GPU
        "training-operator/examples/tensorflow/distribution_strategy/multi_worker_tfjob.yaml",
        "TFJob",
        2,
        2 * GB200 * DAY,
    ),
    "paddle_simple_gpu": (  # Worker 2 × 2 GPUs
        "training-operator/examples/paddlepaddle/simple-gpu.yaml",
        "PaddleJob",
        4,
        4 * GB200 * DAY,
    ),
    # KubeRay: head + worker groups.
    "rayjob_image_classifier": (  # 4 workers × 1 GPU, head none
        "kuberay/examples/pytorch-resnet-image-classifier/ray-job.pytorch-image-classifier.yaml",
        "RayJob",
        4,
        4 * GB200 * DAY,
    ),
    "rayjob_batch_inference": (  # 1 worker × 4 GPUs pinned to T4 by its node selector
        "kuberay/examples/ray-job.batch-inference.yaml",
        "RayJob",
        4,
        4 * T4 * DAY,
    ),
    "raycluster_verl": (  # head only, 4 GPUs, per month
        "kuberay/examples/ray-cluster.verl.yaml",
        "RayCluster",
        4,
        4 * GB200 * MONTH,
    ),
    "rayservice_deepseek": (  # 2 workers × 8 GPUs
        "kuberay/examples/ray-service.deepseek.yaml",
        "RayService",
        16,
        16 * GB200 * MONTH,
    ),
    "rayservice_high_throughput_llm": (  # 4 workers × 1 L4 (gke-accelerator nvidia-l4)
        "kuberay/examples/ray-service.high-throughput-llm.yaml",
        "RayService",
        4,
        4 * L4 * MONTH,
    ),
    # LeaderWorkerSet: replicas × (leader + (size - 1) workers).
    "lws_vllm": (  # 2 × (8 + 1 × 8)
        "lws/examples/docs/vllm/GPU/lws.yaml",
        "LeaderWorkerSet",
        32,
        32 * GB200 * MONTH,
    ),
    "lws_sglang": (  # 2 × (1 + 1 × 1)
        "lws/examples/docs/sglang/lws.yaml",
        "LeaderWorkerSet",
        4,
        4 * GB200 * MONTH,
    ),
    # KServe: the predictor (its `model` container) at max(minReplicas, 1).
    "isvc_hf": (
        "kserve/examples/storage/hf/hf_isvc.yaml",
        "InferenceService",
        1,
        GB200 * MONTH,
    ),
    "isvc_fluid": (  # minReplicas 0, pinned to A10G
        "kserve/examples/fluid/fluid-isvc.yaml",
        "InferenceService",
        1,
        A10G * MONTH,
    ),
    # KServe LLMInferenceService: replicas × (main + pipeline - 1 workers), prefill too.
    "llmisvc_deepseek_dp_ep": (  # 1 × (8 + 1 worker × 8)
        "kserve/examples/llmisvc/dp-ep/deepseek-r1-gpu-rdma-roce/"
        "llm-inference-service-dp-ep-deepseek-r1-gpu-naive.yaml",
        "LLMInferenceService",
        16,
        16 * GB200 * MONTH,
    ),
    "llmisvc_qwen_pd": (  # main 1 × 1 + prefill 2 × 1
        "kserve/examples/llmisvc/single-node-gpu/llm-inference-service-pd-qwen2-7b-gpu.yaml",
        "LLMInferenceService",
        3,
        3 * GB200 * MONTH,
    ),
    # Volcano: Σ tasks × 12 h (no run-time limit to set: warned).
    "vcjob_mindspore": (  # 2 workers × 1 GPU
        "volcano/examples/MindSpore-example/mindspore_gpu/mindspore-gpu.yaml",
        "Job",
        2,
        2 * GB200 * DAY,
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_hand_checked_cost_of_upstream_samples(name, capsys):
    path, kind, gpus, usd = EXAMPLES[name]
    row = _row(capsys, ML_OPERATORS / path, kind)
    assert (row["gpus"], row["cost_usd"]) == (gpus, round(usd, 2))


CAPTURED = {
    # The manifests behind the captured reviews (tests/fixtures/admission-kinds/manifests).
    "deployment-gpu.yaml": ("Deployment", 6, 6 * H100 * MONTH),  # 3 × 2 H100 (gke label)
    "statefulset-notebook.yaml": ("StatefulSet", 1, L4 * MONTH),  # 1 × 1 L4
    "notebook-gpu.yaml": ("Notebook", 1, GB200 * MONTH),  # 1 GPU, type not pinned
    "jobset-gpu.yaml": ("JobSet", 8, round(8 * 2.7447 * DAY, 2)),  # 2 Jobs × 4 × 1 A100-40GB
}


@pytest.mark.parametrize("manifest", sorted(CAPTURED))
def test_hand_checked_cost_of_the_captured_manifests(manifest, capsys):
    kind, gpus, usd = CAPTURED[manifest]
    row = _row(capsys, ADMISSION_KINDS / "manifests" / manifest, kind)
    assert (row["gpus"], row["cost_usd"]) == (gpus, round(usd, 2))


def _write(tmp_path: Path, obj: dict[str, Any]) -> Path:
    path = tmp_path / "object.yaml"
    path.write_text(yaml.safe_dump(obj))
    return path


def _manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((ADMISSION_KINDS / "manifests" / name).read_text())


def test_daemonset_is_priced_per_node_or_denied_unbounded(tmp_path, capsys):
    """One pod per matching node, unknowable at admission: denied without
    costgate.io/max-nodes, priced per node with it (8 GPUs × 3 nodes, per month)."""
    daemonset = _manifest("daemonset-gpu.yaml")
    row = _row(capsys, _write(tmp_path, daemonset), "DaemonSet")
    assert not row["allowed"]
    (reason,) = [r for r in row["reasons"] if r["code"] == "invalid-gpu-request"]
    assert "costgate.io/max-nodes" in reason["message"]
    daemonset["metadata"].setdefault("annotations", {})["costgate.io/max-nodes"] = "3"
    row = _row(capsys, _write(tmp_path, daemonset), "DaemonSet")
    assert row["gpus"] == 24
    per_hour = sum(line["count"] * line["usd_per_hour"] for line in row["breakdown"])
    assert row["cost_usd"] == round(per_hour * MONTH, 2) and row["per_month"]


def test_a_second_sample_of_each_kind_with_one_upstream_gpu_sample(tmp_path, capsys):
    """Kinds upstream has one GPU sample of (or none): derived ones, checked by hand."""
    vcjob = _objects(
        ML_OPERATORS / "volcano/examples/MindSpore-example/mindspore_gpu/mindspore-gpu.yaml"
    )[0]
    vcjob["spec"]["tasks"][1]["replicas"] = 4  # 4 workers × 1 GPU, pinned to H100
    vcjob["spec"]["tasks"][1]["template"]["spec"]["nodeSelector"] = {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }
    row = _row(capsys, _write(tmp_path, vcjob), "Job")
    assert (row["gpus"], row["cost_usd"]) == (4, round(4 * H100 * DAY, 2))
    assert any("no run-time limit" in w for w in row["warnings"])

    jobset = _manifest("jobset-gpu.yaml")
    jobset["spec"]["replicatedJobs"][0]["replicas"] = 3  # 3 Jobs × 4 pods × 1 A100-40GB
    row = _row(capsys, _write(tmp_path, jobset), "JobSet")
    assert (row["gpus"], row["cost_usd"]) == (12, round(12 * 2.7447 * DAY, 2))

    notebook = _manifest("notebook-gpu.yaml")
    notebook["spec"]["template"]["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-L4"}
    row = _row(capsys, _write(tmp_path, notebook), "Notebook")
    assert (row["gpus"], row["cost_usd"]) == (1, round(L4 * MONTH, 2))

    statefulset = _manifest("statefulset-notebook.yaml")
    statefulset["spec"]["replicas"] = 4
    row = _row(capsys, _write(tmp_path, statefulset), "StatefulSet")
    assert (row["gpus"], row["cost_usd"]) == (4, round(4 * L4 * MONTH, 2))

    replicaset = _manifest("deployment-gpu.yaml") | {"kind": "ReplicaSet"}
    row = _row(capsys, _write(tmp_path, replicaset), "ReplicaSet")
    assert (row["gpus"], row["cost_usd"]) == (6, round(6 * H100 * MONTH, 2))

    deployment = _manifest("deployment-gpu.yaml")
    deployment["spec"]["replicas"] = 1
    row = _row(capsys, _write(tmp_path, deployment), "Deployment")
    assert (row["gpus"], row["cost_usd"]) == (2, round(2 * H100 * MONTH, 2))


def test_ray_autoscaling_prices_worker_groups_at_max_replicas(tmp_path, capsys):
    """With the autoscaler on, a worker group can grow to maxReplicas: priced there (× hosts);
    without it, at replicas (raised to minReplicas)."""
    cluster = yaml.safe_load((ML_OPERATORS / "kuberay/examples/ray-cluster.verl.yaml").read_text())
    cluster["spec"]["workerGroupSpecs"] = [
        {
            "groupName": "gpu",
            "replicas": 1,
            "minReplicas": 2,
            "maxReplicas": 5,
            "numOfHosts": 2,
            "template": cluster["spec"]["headGroupSpec"]["template"],  # 4 GPUs a pod
        }
    ]
    row = _row(capsys, _write(tmp_path, cluster), "RayCluster")
    assert row["gpus"] == 4 + 2 * 2 * 4  # head + minReplicas 2 × 2 hosts × 4 GPUs
    cluster["spec"]["enableInTreeAutoscaling"] = True
    row = _row(capsys, _write(tmp_path, cluster), "RayCluster")
    assert row["gpus"] == 4 + 5 * 2 * 4
    assert row["cost_usd"] == round(row["gpus"] * GB200 * MONTH, 2)


def test_training_job_gets_its_deadline_and_suspend_read(tmp_path, capsys):
    """runPolicy.activeDeadlineSeconds is the deadline: a smaller one prices the job, and
    runPolicy.suspend is read (a suspended job is priced, and held once it runs)."""
    path = ML_OPERATORS / "training-operator/examples/pytorch/mnist/v1/pytorch_job_mnist_nccl.yaml"
    job = yaml.safe_load(path.read_text())
    job["metadata"]["labels"] = {"owner": "alice", "experiment": "mnist"}
    job["spec"]["runPolicy"] = {"activeDeadlineSeconds": 3600}
    row = _row(capsys, _write(tmp_path, job), "PyTorchJob")
    assert (row["max_runtime_seconds"], row["cost_usd"]) == (3600, round(2 * GB200, 2))
    job["metadata"]["annotations"] = {"costgate.io/max-runtime": "30m"}
    row = _row(capsys, _write(tmp_path, job), "PyTorchJob")
    assert (row["deadline_seconds"], row["cost_usd"]) == (1800, round(GB200, 2))


# --------------------------------------------------------------------------- the table


def test_every_shipped_entry_has_a_sample_or_a_capture():
    """The shipped table: the apps kinds and the operators' kinds the issue names."""
    table = load_kinds()
    assert set(table) == {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        *(
            ("kubeflow.org", k)
            for k in ("PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "JAXJob")
        ),
        ("kubeflow.org", "Notebook"),
        ("ray.io", "RayCluster"),
        ("ray.io", "RayJob"),
        ("ray.io", "RayService"),
        ("jobset.x-k8s.io", "JobSet"),
        ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"),
        ("serving.kserve.io", "InferenceService"),
        ("serving.kserve.io", "LLMInferenceService"),
        ("batch.volcano.sh", "Job"),
    }
    for spec in table.values():
        assert spec.templates and spec.workload_class in ("batch", "serving")


def test_split_path_reads_wildcards():
    assert split_path("spec.workerGroupSpecs[*].template") == (
        "spec",
        "workerGroupSpecs",
        "[*]",
        "template",
    )
    assert split_path("spec.pytorchReplicaSpecs.*") == ("spec", "pytorchReplicaSpecs", "*")


OPERATOR_KIND = {
    "group": "example.com",
    "kind": "TrainingRun",
    "workload_class": "batch",
    "deadline": "spec.limits.maxSeconds",
    "templates": [{"each": "spec.workers[*]", "template": "pod", "replicas": "count"}],
}


def _training_run(count: int = 3) -> dict[str, Any]:
    pod = {
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
        }
    }
    return {
        "apiVersion": "example.com/v1",
        "kind": "TrainingRun",
        "metadata": {
            "name": "run",
            "labels": {"owner": "alice", "experiment": "x"},
            "annotations": {"costgate.io/max-runtime": "2h"},
        },
        "spec": {"workers": [{"count": count, "pod": pod}]},
    }


def test_a_policy_adds_an_operator_kind_without_code(tmp_path, capsys):
    """A platform team's own operator, described in the policy: priced like the shipped
    kinds (3 workers × 2 H100 × 2 h), its deadline read and set where the entry says."""
    path = _write(tmp_path, _training_run())
    row = _row(capsys, path, "TrainingRun")
    assert (row["gpus"], row["cost_usd"]) == (0, 0.0)  # unknown kind: not costgate's
    policy = policy_data()
    policy["kinds"] = [OPERATOR_KIND]
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    row = _row(capsys, path, "TrainingRun", extra=["--policy", str(policy_path)])
    assert (row["gpus"], row["cost_usd"]) == (6, round(6 * H100 * 2, 2))
    assert row["deadline_seconds"] == 7200


def test_a_policy_overrides_a_shipped_entry():
    """An entry of the same group and kind replaces the shipped one."""
    policy = policy_data()
    policy["kinds"] = [
        {
            "group": "apps",
            "kind": "Deployment",
            "workload_class": "batch",
            "templates": [{"each": "spec", "replicas": "replicas"}],
        }
    ]
    parsed = parse_policy(policy, "policy.yaml")
    assert parsed.kinds[("apps", "Deployment")].workload_class == "batch"
    assert parsed.kinds[("apps", "StatefulSet")].workload_class == "serving"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**OPERATOR_KIND, "group": "batch", "kind": "Job"}, "has a reader of its own"),
        ({**OPERATOR_KIND, "workload_class": "sometimes"}, "workload_class"),
        ({**OPERATOR_KIND, "templates": []}, "templates"),
        ({**OPERATOR_KIND, "deadline": "spec.a[*].b"}, "not a field path"),
        ({**OPERATOR_KIND, "templates": [{"each": "spec..x"}]}, "not a field path"),
        (
            {**OPERATOR_KIND, "templates": [{"each": "spec", "unbounded": True}]},
            "unbounded needs count_annotation",
        ),
        ({**OPERATOR_KIND, "colour": "blue"}, "colour"),
    ],
)
def test_a_bad_kinds_entry_is_refused_naming_the_field(entry, message):
    policy = policy_data()
    policy["kinds"] = [entry]
    with pytest.raises(TableError, match=message):
        parse_policy(policy, "policy.yaml")
