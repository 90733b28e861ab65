"""TLS material for the webhook: a private CA and a serving certificate signed by it.

The API server only talks HTTPS to webhooks and checks the serving certificate against the
`caBundle` of the webhook configuration, so the CA certificate is the thing to hand out.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertPaths", "ensure_certificates", "issue", "service_hosts"]

_CA_DAYS = 365
_SERVING_DAYS = 150
_RENEW_BEFORE = dt.timedelta(days=15)


@dataclass(frozen=True, slots=True)
class CertPaths:
    ca: Path
    cert: Path
    key: Path


def service_hosts(service: str, namespace: str) -> list[str]:
    """The DNS names the API server may use for an in-cluster webhook Service."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        tmp.chmod(0o600)
    tmp.replace(path)  # readers never see a half-written file


def issue(directory: Path, hosts: list[str], *, now: dt.datetime | None = None) -> CertPaths:
    """A new CA and a serving certificate for `hosts`, written as ca.crt, tls.crt, tls.key."""
    now = now or dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("costgate-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_SERVING_DAYS))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = CertPaths(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    pem = serialization.Encoding.PEM
    _write(paths.ca, ca_cert.public_bytes(pem))
    _write(
        paths.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        private=True,
    )
    _write(paths.cert, cert.public_bytes(pem))
    return paths


def _usable(paths: CertPaths, hosts: list[str], now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        paths.ca.stat()
        paths.key.stat()
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    present |= {str(n) for n in san.get_values_for_type(x509.IPAddress)}
    return set(hosts) <= present


def ensure_certificates(directory: Path, hosts: list[str]) -> CertPaths:
    """Reuse the certificates in `directory` if they cover `hosts` and are not about to
    expire; otherwise issue new ones. This is how `costgate serve` runs with no flags."""
    paths = CertPaths(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    if _usable(paths, hosts, dt.datetime.now(dt.UTC)):
        return paths
    return issue(directory, hosts)


# The webhooks of manifests/base/webhooks.yaml, each of which needs the CA bundle.
WEBHOOK_KINDS = ("pods", "jobs", "cronjobs", "workflows", "claims", "apps", "mlkinds", "scale")


def write_cluster_manifests(
    paths: CertPaths, directory: Path, *, namespace: str, secret: str = "costgate-tls"
) -> tuple[Path, Path]:
    """The Secret holding the serving pair and the CA, and the strategic-merge patch that
    sets `caBundle` on every costgate webhook: what the self-signed overlay applies."""
    import base64

    import yaml

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode("ascii")

    ca_bundle = b64(paths.ca)
    secret_doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": secret, "namespace": namespace},
        "data": {"tls.crt": b64(paths.cert), "tls.key": b64(paths.key), "ca.crt": ca_bundle},
    }
    patches = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": f"{kind}WebhookConfiguration",
            "metadata": {"name": "costgate"},
            "webhooks": [
                {"name": f"{resource}.{verb}.costgate.io", "clientConfig": {"caBundle": ca_bundle}}
                for resource in WEBHOOK_KINDS
            ],
        }
        for kind, verb in (("Mutating", "mutate"), ("Validating", "validate"))
    ]
    secret_path = directory / "secret.yaml"
    patch_path = directory / "cabundle-patch.yaml"
    _write(secret_path, yaml.safe_dump(secret_doc, sort_keys=False).encode(), private=True)
    _write(patch_path, yaml.safe_dump_all(patches, sort_keys=False).encode())
    return secret_path, patch_path
