"""The documentation is linted and kept in step with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from awp.cli import build_parser
from awp.settings import _KEYS

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted((REPO / "man").glob("*.[0-9]"))


def test_there_are_man_pages():
    assert {p.name for p in PAGES} >= {"awp.8", "awp-portknock-list.5", "knock.sh.1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_page_has_no_warnings(page):
    assert shutil.which("man"), "man (man-db) is required to lint the man pages"
    r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                       env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("key", sorted(_KEYS))
def test_every_setting_is_documented_and_shipped(key):
    page = (REPO / "man" / "awp.8").read_text()
    assert key in page.replace(r"\%", "")
    assert re.search(rf"^{key}=", (REPO / "etc" / "config").read_text(), re.M)


def test_every_command_is_in_the_man_page():
    page = (REPO / "man" / "awp.8").read_text().replace("\\-", "-")  # roff escapes hyphens
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command in subparsers.choices:
        assert re.search(rf"\b{command}\b", page), command


def test_shipped_example_configuration_is_valid(tmp_path):
    from awp.checks import check_config
    from awp.load import load_config
    from awp.paths import Root

    shutil.copytree(REPO / "etc", tmp_path / "etc")
    config = load_config(Root(tmp_path))
    assert config.active_simple, "the example must protect something"
    assert check_config(config) == [], "the shipped example must not trigger warnings"
