"""Fixtures shared by several test modules, and the suite's own rules.

Servers in tests listen on 127.0.0.1 or inside a namespace the test makes itself; the
fixtures here build such namespaces with the ``ip`` tool and remove them afterwards, and
skip (saying why) where namespaces are not permitted. A test that uses one is marked
``network`` (and ``slow``). Under CI (``CI=true``) a skipped test fails the session: every
test must run on the CI machine, so a skip there is a test that silently stopped testing.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NAMESPACE_FIXTURES = {"two_hosts", "loopback_only"}
_skipped: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NAMESPACE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)
            item.add_marker(pytest.mark.slow)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if os.environ.get("CI") == "true" and _skipped:
        terminalreporter.section("skipped under CI: each must run here", red=True)
        for line in _skipped:
            terminalreporter.write_line(line)


def netns(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *command], capture_output=True, text=True)


def _new_namespace(name: str) -> None:
    if shutil.which("ip") is None:
        pytest.skip("the ip tool is not installed")
    probe = netns("netns", "add", name)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces are not permitted here: {probe.stderr.strip()}")


@pytest.fixture
def loopback_only() -> Iterator[str]:
    """A network namespace whose only interface is loopback: whatever a test starts in it
    (Ray's daemons, which listen on every interface) is reachable from nowhere else."""
    name = f"fs-lo-{os.getpid() % 100000}"
    _new_namespace(name)
    try:
        done = netns("-n", name, "link", "set", "lo", "up")
        if done.returncode != 0:
            pytest.skip(f"could not bring up loopback in {name}: {done.stderr}")
        yield name
    finally:
        netns("netns", "delete", name)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair: a server host at 10.231.7.1 and a
    client host at 10.231.7.2, made for this test and removed after it."""
    tag = f"{os.getpid() % 100000}"
    server_ns, client_ns = f"fs-srv-{tag}", f"fs-cli-{tag}"
    _new_namespace(server_ns)
    try:
        steps = [
            ("netns", "add", client_ns),
            ("link", "add", f"vs{tag}", "type", "veth", "peer", "name", f"vc{tag}"),
            ("link", "set", f"vs{tag}", "netns", server_ns),
            ("link", "set", f"vc{tag}", "netns", client_ns),
            ("-n", server_ns, "addr", "add", "10.231.7.1/24", "dev", f"vs{tag}"),
            ("-n", client_ns, "addr", "add", "10.231.7.2/24", "dev", f"vc{tag}"),
            ("-n", server_ns, "link", "set", f"vs{tag}", "up"),
            ("-n", client_ns, "link", "set", f"vc{tag}", "up"),
            ("-n", server_ns, "link", "set", "lo", "up"),
            ("-n", client_ns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = netns(*step)
            if done.returncode != 0:
                pytest.skip(f"could not build the namespaces ({' '.join(step)}): {done.stderr}")
        yield server_ns, client_ns
    finally:
        netns("netns", "delete", server_ns)
        netns("netns", "delete", client_ns)


def make_certificates(folder: Path) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """A CA, a server certificate and key for 127.0.0.1/localhost, and a client certificate
    and key, both signed by the CA (PEM)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedstream test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM

    def signed(common_name, names):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        key_pem = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(pem), key_pem

    server_names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_cert, server_key = signed("localhost", server_names)
    client_cert, client_key = signed("client-0", [x509.DNSName("client-0")])
    return ca.public_bytes(pem), server_cert, server_key, client_cert, client_key
