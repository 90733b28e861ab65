"""Serving certificates: issued for the right names, reused while good, renewed when not."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from webhook.certs import ensure_certificates, issue


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_certificates_are_reused_while_they_cover_the_hosts(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, ["localhost", "127.0.0.1"])
    before = _serial(first.cert)
    again = ensure_certificates(tmp_path, ["localhost"])
    assert _serial(again.cert) == before
    assert oct(first.key.stat().st_mode & 0o777) == "0o600"


def test_a_new_host_issues_a_new_certificate(tmp_path: Path) -> None:
    before = _serial(ensure_certificates(tmp_path, ["localhost"]).cert)
    second = ensure_certificates(tmp_path, ["localhost", "costgate.example"])
    assert _serial(second.cert) != before
    san = x509.load_pem_x509_certificate(second.cert.read_bytes()).extensions
    names = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "costgate.example" in names.get_values_for_type(x509.DNSName)


def test_a_certificate_about_to_expire_is_renewed(tmp_path: Path) -> None:
    old = issue(tmp_path, ["localhost"], now=dt.datetime.now(dt.UTC) - dt.timedelta(days=140))
    before = _serial(old.cert)  # 10 days left, inside the 15-day renewal window
    assert _serial(ensure_certificates(tmp_path, ["localhost"]).cert) != before


def test_an_unreadable_certificate_is_replaced(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, ["localhost"])
    paths.cert.write_text("not a certificate")
    assert ensure_certificates(tmp_path, ["localhost"]).cert.read_text().startswith("-----BEGIN")
