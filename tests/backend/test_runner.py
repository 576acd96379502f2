"""The real runner on programs that are not there: an EnvironmentProblem naming the package."""

from __future__ import annotations

import pytest

from awp.backend.runner import run
from awp.errors import EnvironmentProblem


@pytest.mark.parametrize(("program", "package"), [("nft", "nftables"), ("iptables-nft-save", "iptables"),
                                                  ("ip6tables-legacy-restore", "iptables")])
def test_a_missing_program_names_its_package(monkeypatch, tmp_path, program, package):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: nothing is found
    with pytest.raises(EnvironmentProblem) as info:
        run([program, "--version"])
    assert str(info.value) == f"{program} not found; install the {package} package"
    assert info.value.exit_code == 6


def test_output_and_exit_code_come_back():
    result = run(["sh", "-c", "cat; echo oops >&2; exit 3"], "in\n")
    assert (result.returncode, result.stdout, result.stderr) == (3, "in\n", "oops\n")
