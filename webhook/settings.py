"""Server settings: flags, environment (`COSTGATE_` prefix) and defaults, built once and
passed down; nothing reads the environment after start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COSTGATE_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    pricing: Path | None = None  # default: the bundled table
    policy: Path | None = None  # default: the bundled policy
    tls_cert: Path | None = None  # with tls_key: use these; otherwise self-signed in cert_dir
    tls_key: Path | None = None
    cert_dir: Path = Path(".costgate/certs")
    cert_hosts: list[str] = ["localhost", "127.0.0.1", "::1"]
    max_body_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    approvers_dir: Path | None = None  # approvers' public keys (*.pem); none: no approvals
    log_level: str = "info"
    reload_interval: float = Field(default=2.0, gt=0)  # seconds between checks of changed files
    log_format: Literal["json"] = "json"  # one JSON object per line
    # Quota and budget state: memory (one process, the embedded default) or cluster (a
    # watch cache of live workloads and a ConfigMap ledger, shared by every replica).
    state: Literal["memory", "cluster"] = "memory"
    ledger_namespace: str = "costgate-system"  # where the ledger ConfigMaps live
    kubeconfig: Path | None = None  # cluster state: this kubeconfig; default in-cluster
    kube_context: str | None = None
    # How long the cache is trusted while a watch keeps failing (API server unreachable):
    # past it /readyz answers 503 and governed workloads get on_state_unavailable.
    stale_after: float = Field(default=30.0, gt=0)
    # Who may read GET /status (every team's usage and budgets): kubernetes (a bearer token,
    # checked by TokenReview and SubjectAccessReview) or loopback (callers on this host).
    # Default: kubernetes with cluster state, loopback with memory state.
    status_auth: Literal["kubernetes", "loopback"] | None = None
    # POST /noop reads the body and answers a constant review without parsing it: for
    # benchmarks only, so the cost of costgate's own code shows next to the server's.
    noop_endpoint: bool = False
