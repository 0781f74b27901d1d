"""Fixtures shared by several test modules: network namespaces made for one test.

Servers in tests listen on 127.0.0.1 or inside a namespace the test makes itself; these
build such namespaces with the ``ip`` tool and remove them afterwards, and skip (saying
why) where namespaces are not permitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest


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
