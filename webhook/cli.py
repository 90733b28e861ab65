"""`costgate` (also `kubectl costgate`): serve | estimate | certs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .approvals import Keyring, keygen, mint
from .certs import ensure_certificates, issue, service_hosts, write_cluster_manifests
from .core.quantities import parse_duration
from .core.types import Requester
from .estimate import (
    ManifestError,
    estimate_rows,
    read_manifests,
    render_json,
    render_table,
    with_approval,
)
from .tables import TableError, load_config

__all__ = ["main"]

EXIT_OK, EXIT_DENIED, EXIT_BAD_INPUT = 0, 1, 2


def _estimate(args: argparse.Namespace) -> int:
    keyring = Keyring(args.approvers) if args.approvers else None
    config = load_config(args.pricing, args.policy, keyring.verify if keyring else None)
    objects = []
    try:
        for name in args.file:
            if name == "-":
                objects += read_manifests(sys.stdin.buffer, "STDIN")
            else:
                with open(name, "rb") as stream:
                    objects += read_manifests(stream, name)
    except OSError as exc:
        print(f"costgate: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ManifestError as exc:
        print(f"costgate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.approval:
        objects = [with_approval(obj, args.approval) for obj in objects]
    requester = Requester(args.as_user, tuple(args.as_group))
    rows = estimate_rows(
        objects, config=config, namespace=args.namespace, now=time.time(), requester=requester
    )
    print(render_json(rows) if args.output == "json" else render_table(rows))
    if any(r["code"] == "invalid-request" for row in rows for r in row["reasons"]):
        return EXIT_BAD_INPUT  # an object with fields of the wrong type is not a manifest
    return EXIT_OK if all(row["allowed"] for row in rows) else EXIT_DENIED


_SERVE_ENV = {
    "host": "COSTGATE_HOST",
    "port": "COSTGATE_PORT",
    "workers": "COSTGATE_WORKERS",
    "pricing": "COSTGATE_PRICING",
    "policy": "COSTGATE_POLICY",
    "tls_cert": "COSTGATE_TLS_CERT",
    "tls_key": "COSTGATE_TLS_KEY",
    "cert_dir": "COSTGATE_CERT_DIR",
    "log_level": "COSTGATE_LOG_LEVEL",
    "approvers_dir": "COSTGATE_APPROVERS_DIR",
}


def _serve(args: argparse.Namespace) -> int:
    from .logs import configure
    from .server.run import serve
    from .settings import Settings

    # Flags become COSTGATE_* variables: worker processes build their app from them.
    for option, variable in _SERVE_ENV.items():
        value = getattr(args, option)
        if value is not None:
            os.environ[variable] = str(value)
    settings = Settings()
    configure(settings.log_level)
    load_config(settings.pricing, settings.policy)  # refuse bad files before listening
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise TableError("--tls-cert and --tls-key go together")
    if settings.tls_cert and settings.tls_key:
        certfile, keyfile = str(settings.tls_cert), str(settings.tls_key)
    else:
        paths = ensure_certificates(settings.cert_dir, list(settings.cert_hosts))
        certfile, keyfile = str(paths.cert), str(paths.key)
        print(
            f"costgate: self-signed certificate in {settings.cert_dir} (CA: {paths.ca})",
            file=sys.stderr,
        )
    print(
        f"costgate: serving https://{settings.host}:{settings.port} "
        f"(POST /mutate, /validate; GET /healthz, /readyz, /metrics)",
        file=sys.stderr,
    )
    serve(settings, certfile=certfile, keyfile=keyfile)
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    pair = keygen(args.approver, args.out)
    print(f"key id {pair.key_id}")
    print(f"private key (keep it; costgate approve --key): {pair.private_path}")
    print(f"public key (add it to the webhook's approvers directory): {pair.public_path}")
    return EXIT_OK


def _approve(args: argparse.Namespace) -> int:
    lifetime = parse_duration(args.expires)
    if lifetime is None:
        print(
            f"costgate: --expires {args.expires!r} is not a duration such as 12h or 3d",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        token = mint(
            args.key,
            namespace=args.namespace,
            max_usd=args.max_cost,
            expires_in=lifetime,
            experiment=args.experiment or "",
            name=args.name or "",
            reason=args.reason or "",
            uses=args.uses,
        )
    except (OSError, ValueError) as exc:
        print(f"costgate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(token)
    print(
        f"\n# submit the manifest with the approval:\nkubectl annotate --local -f FILE "
        f"costgate.io/approval={token} -o yaml | kubectl -n {args.namespace} create -f -\n"
        f"# or put it under metadata.annotations in the manifest:\n"
        f"costgate.io/approval: {token}",
        file=sys.stderr,
    )
    return EXIT_OK


def _certs(args: argparse.Namespace) -> int:
    hosts = service_hosts(args.service, args.namespace) + list(args.host or ())
    paths = issue(args.out, hosts)
    secret, patch = write_cluster_manifests(paths, args.out, namespace=args.namespace)
    print(f"wrote {paths.ca}, {paths.cert}, {paths.key} for {', '.join(hosts)}")
    print(f"wrote {secret} (Secret costgate-tls) and {patch} (caBundle for the webhooks)")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    import orjson

    from .state.report import render_status

    if args.server:
        import httpx

        verify: bool | str = str(args.ca) if args.ca else True
        query = {"namespace": args.namespace} if args.namespace else {}
        headers = {}
        if args.token_file:
            try:
                source = args.token_file
                token = (sys.stdin.read() if source == "-" else Path(source).read_text()).strip()
            except OSError as exc:
                print(f"costgate: cannot read the token: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            headers["Authorization"] = f"Bearer {token}"
        url = f"{args.server.rstrip('/')}/status"
        try:
            response = httpx.get(url, params=query, headers=headers, verify=verify)
        except httpx.HTTPError as exc:
            print(f"costgate: cannot reach {args.server}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if response.status_code != 200:
            try:
                why = f": {response.json()['error']}"
            except (ValueError, KeyError, TypeError):
                why = ""
            print(f"costgate: {args.server} answered {response.status_code}{why}", file=sys.stderr)
            return EXIT_BAD_INPUT
        report = response.json()
    else:
        from .state.cluster import cluster_state
        from .state.report import usage_report

        config = load_config(args.pricing, args.policy)
        try:
            state = cluster_state(
                lambda: config,
                ledger_namespace=args.ledger_namespace,
                kubeconfig=args.kubeconfig,
                context=args.context,
                watch_seconds=5,
            )
        except Exception as exc:  # no kubeconfig, bad context: say which
            print(f"costgate: cannot load cluster credentials: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        assert state.cluster is not None
        state.cluster.start()
        try:
            if not state.cluster.wait_synced(args.timeout):
                sync = state.cluster.sync_state()
                print(f"costgate: the cluster did not answer in time: {sync}", file=sys.stderr)
                return EXIT_BAD_INPUT
            report = usage_report(state, config.policy, namespace=args.namespace, now=time.time())
        finally:
            state.cluster.stop()
    if args.output == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_status(report))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costgate", description="Price GPU workloads before they start."
    )
    parser.add_argument("--version", action="version", version=f"costgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the admission webhook over HTTPS")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--pricing", type=Path, help="pricing table (default: bundled)")
    serve.add_argument("--policy", type=Path, help="policy file (default: bundled)")
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--cert-dir", type=Path, help="where self-signed certificates go")
    serve.add_argument("--log-level")
    serve.add_argument("--approvers-dir", type=Path, help="approvers' public keys (*.pem)")
    serve.set_defaults(run=_serve)

    estimate = commands.add_parser("estimate", help="the webhook's decision for manifests, offline")
    estimate.add_argument(
        "-f",
        "--filename",
        dest="file",
        action="append",
        required=True,
        help="FILE or - (repeatable: WorkflowTemplates in any file resolve references)",
    )
    estimate.add_argument("-o", "--output", choices=("table", "json"), default="table")
    estimate.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace for objects that name none (default: default)",
    )
    estimate.add_argument("--pricing", type=Path)
    estimate.add_argument("--policy", type=Path)
    estimate.add_argument("--approval", help="check this approval token against the objects")
    estimate.add_argument("--approvers", type=Path, help="approvers' public keys (directory)")
    estimate.add_argument(
        "--as",
        dest="as_user",
        default="",
        metavar="USER",
        help="decide as if USER submitted the objects (as the API server names them)",
    )
    estimate.add_argument(
        "--as-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="a group of that user (repeatable)",
    )
    estimate.set_defaults(run=_estimate)

    generate = commands.add_parser("keygen", help="an Ed25519 key pair for an approver")
    generate.add_argument("--approver", required=True, help="the approver's name")
    generate.add_argument("--out", type=Path, default=Path("."), help="where to write the keys")
    generate.set_defaults(run=_keygen)

    approve = commands.add_parser("approve", help="sign an approval for an expensive workload")
    approve.add_argument("--key", type=Path, required=True, help="the approver's private key")
    approve.add_argument("--namespace", required=True)
    bound = approve.add_mutually_exclusive_group(required=True)
    bound.add_argument("--experiment", help="approve workloads with this experiment label")
    bound.add_argument("--name", help="approve the workload with this name")
    approve.add_argument("--max-cost", type=float, required=True, help="approved maximum, USD")
    approve.add_argument("--expires", required=True, help="lifetime, e.g. 24h or 7d")
    approve.add_argument("--reason", help="why (recorded in the token)")
    approve.add_argument(
        "--uses",
        type=int,
        help="the most workloads it may admit (all of them together stay within --max-cost)",
    )
    approve.set_defaults(run=_approve)

    status = commands.add_parser("status", help="usage against quotas and budgets")
    status.add_argument("-n", "--namespace", help="only this namespace")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status.add_argument("--server", help="ask a running webhook (https://HOST:PORT) instead")
    status.add_argument("--ca", type=Path, help="CA certificate of --server")
    status.add_argument(
        "--token-file",
        help="bearer token for --server (e.g. <(kubectl create token NAME)); '-': standard input",
    )
    status.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG or ~/.kube/config")
    status.add_argument("--context", help="kubeconfig context")
    status.add_argument("--ledger-namespace", default="costgate-system")
    status.add_argument("--policy", type=Path, help="the policy the webhook runs (quotas)")
    status.add_argument("--pricing", type=Path)
    status.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the lists")
    status.set_defaults(run=_status)

    certs = commands.add_parser("certs", help="a CA and serving certificate for the webhook")
    certs.add_argument("--out", type=Path, default=Path("certs/out"))
    certs.add_argument("--service", default="costgate")
    certs.add_argument("--namespace", default="costgate-system")
    certs.add_argument("--host", action="append", help="extra DNS name or IP (repeatable)")
    certs.set_defaults(run=_certs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except TableError as exc:
        print(f"costgate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
