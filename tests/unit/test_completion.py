"""etc/bash_completion.d/awp, sourced in a real bash with COMP_WORDS set as readline would:
commands, options, --root directories, and the advanced doors' ports read from the root's
configuration (through the hidden `awp _ports`). The lists in the script are checked
against the argument parser, so a new command or option cannot be forgotten there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from awp.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "etc" / "bash_completion.d" / "awp"
BIN = Path(sys.executable).parent  # the venv's bin, which holds the awp console script


def complete(*words: str, env: dict | None = None) -> list[str]:
    """COMPREPLY for the command line `words`, the last one being completed."""
    assert shutil.which("bash")
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (f"source {SCRIPT}\nCOMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\n_awp\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    run_env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"), **(env or {})}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                            env=run_env, timeout=30)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return sorted(filter(None, result.stdout.split("\n")))


def subcommands() -> dict:
    return next(a for a in build_parser()._actions if a.dest == "command").choices


def test_first_word_completes_every_command_and_the_apply_options():
    assert complete("awp", "") == sorted(subcommands())
    assert complete("awp", "-v", "--root", "/tmp", "") == sorted(subcommands())
    assert complete("awp", "re") == ["remove", "revoke"]
    assert complete("awp", "--co") == ["--confirm"]
    assert complete("awp", "-s", "-f", "--d") == ["--dry-run"]


def test_the_scripts_lists_match_the_parser():
    text = SCRIPT.read_text()
    listed = re.search(r'_awp_commands="([^"]*)"', text).group(1).split()
    assert sorted(listed) == sorted(subcommands())
    top = {o for a in build_parser()._actions for o in a.option_strings}
    assert top <= set(complete("awp", "-"))
    for name, parser in subcommands().items():
        options = {o for a in parser._actions for o in a.option_strings}
        assert options <= set(complete("awp", name, "-")), name


def test_command_options():
    assert complete("awp", "status", "--j") == ["--json"]
    assert complete("awp", "grant", "198.18.1.2", "2222", "--f") == ["--for"]
    assert complete("awp", "metrics", "--o") == ["--output"]
    assert complete("awp", "grant", "198.18.1.2", "2222", "--for", "") == []  # a number


def test_root_completes_directories(tmp_path):
    (tmp_path / "alpha").mkdir()
    (tmp_path / "afile").write_text("")
    assert complete("awp", "--root", f"{tmp_path}/a") == [f"{tmp_path}/alpha"]


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "etc" / "firewall").mkdir(parents=True)
    (tmp_path / "etc" / "config").write_text('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_ADVANCED="yes"\n')
    lst = tmp_path / "etc" / "firewall" / "advanced-portknock-list"
    lst.write_text("2222,2000,opensecret1,closesecret1\n8022,8000,opensecret2,closesecret2\n")
    os.chmod(lst, 0o600)
    return tmp_path


def test_grant_and_revoke_complete_the_advanced_doors_ports(root):
    assert complete("awp", "--root", str(root), "grant", "198.18.1.2", "") == ["2222", "8022"]
    assert complete("awp", "revoke", "--root", str(root), "198.18.1.2", "8") == ["8022"]
    assert complete("awp", "grant", "198.18.1.2", "", env={"AWP_ROOT": str(root)}) == ["2222", "8022"]
    assert complete("awp", "--root", str(root), "grant", "") == []  # the address comes first


def test_no_ports_from_a_broken_or_missing_configuration(root, tmp_path):
    (root / "etc" / "firewall" / "advanced-portknock-list").write_text("2222,2000\n")
    assert complete("awp", "--root", str(root), "grant", "198.18.1.2", "") == []
    assert complete("awp", "--root", str(tmp_path / "none"), "grant", "198.18.1.2", "") == []


def test_ports_helper_prints_nothing_but_ports(root, capsys):
    from awp import cli

    assert cli.main(["--root", str(root), "_ports"]) == 0
    assert capsys.readouterr().out == "2222\n8022\n"


def test_the_script_passes_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is in DEB_PKGS"
    result = subprocess.run(["shellcheck", "-s", "bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
