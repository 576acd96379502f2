"""Fixtures for the netns tier: throwaway namespaces, real kernel, real packets.

These tests need root (namespaces, veth, iptables). Without it they FAIL, never skip:
a green run must mean the end-to-end tier really ran.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).parent)
if HERE not in sys.path:  # harness.py must import under --import-mode=importlib too
    sys.path.insert(0, HERE)
from harness import Lab  # noqa: E402
from views import BACKENDS  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "netns: end-to-end test in throwaway network namespaces (needs root)")


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("netns tests need root (network namespaces, veth, iptables); "
                    "run them as root, e.g. in the CI container", pytrace=False)


def _tag(request) -> str:
    return request.node.name.removeprefix("test_")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """FW_PORTKNOCK_BACKEND of this test's awp root: every behavioural test runs on each of
    views.BACKENDS; views.on_every_backend adds iptables-legacy to a test."""
    return request.param


@pytest.fixture
def lab(request):
    """A Lab with a server and 2 clients, removed after the test."""
    _require_root()
    with Lab(clients=2, tag=_tag(request)) as the_lab:
        yield the_lab


@pytest.fixture
def lab3(request):
    """A Lab with a server and 3 clients, removed after the test."""
    _require_root()
    with Lab(clients=3, tag=_tag(request)) as the_lab:
        yield the_lab
