"""The CLI in-process: bad configurations give exit code 3 and one `awp: error: path:line: ...`
line on stderr, never a traceback. Only `check` and usage errors run here: nothing touches
the kernel."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

from awp.cli import main

REPO_ETC = Path(__file__).resolve().parents[2] / "etc"
SECRET_MARK = "SeCrEt"


@pytest.fixture
def root(tmp_path) -> Path:
    """An awp root whose etc/ is a copy of the repository's shipped etc/."""
    shutil.copytree(REPO_ETC, tmp_path / "etc")
    return tmp_path


def awp(root: Path, *args: str) -> int:
    return main(["--root", str(root), *args])


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("awp: error: ")
    return lines[0]


def test_check_on_the_shipped_etc_exits_0(root, capsys):
    assert awp(root, "check") == 0
    captured = capsys.readouterr()
    assert "configuration OK: 1 simple door(s), 0 advanced door(s)" in captured.out
    assert "error" not in captured.err


def test_check_with_advanced_mode_and_a_good_secret_file(root, capsys):
    if os.geteuid() != 0:
        pytest.skip("the advanced list must be owned by root")
    (root / "etc" / "config").write_text('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_ADVANCED="yes"\n')
    adv = root / "etc" / "firewall" / "advanced-portknock-list"
    adv.write_text("2222,2000,SeCrEtVaLuE1,SeCrEtVaLuE2\n")
    adv.chmod(0o600)
    assert awp(root, "check") == 0
    captured = capsys.readouterr()
    assert "1 advanced door(s)" in captured.out
    assert SECRET_MARK not in captured.out + captured.err


def test_check_on_an_empty_simple_list_warns_no_doors(root, capsys):
    (root / "etc" / "firewall" / "simple-portknock-list").write_text("")
    assert awp(root, "check") == 0
    captured = capsys.readouterr()
    assert "awp: warning:" in captured.err and "no doors" in captured.err
    assert "0 simple door(s)" in captured.out


# (file under etc/, content, line in the message or None, words in the message)
CONFIG_ERRORS = [
    pytest.param("config", 'FW_PORTKNOCK="yes"\n\nFW_PORTKNOCK_STEP_TIMEOUT="soon"\n', 3,
                 ["FW_PORTKNOCK_STEP_TIMEOUT"], id="bad-number"),
    pytest.param("config", '# c\nFW_PORTKNOCK="yes"\nFW_PORTKNOCK_TIMEOUT="5"\n', 3,
                 ["unknown setting FW_PORTKNOCK_TIMEOUT"], id="unknown-key"),
    pytest.param("firewall/simple-portknock-list", "# c\n22:7481,2203,9127\n443:5821,70000,6113\n", 3,
                 ["knock 2", "70000", "out of range"], id="knock-out-of-range"),
    pytest.param("firewall/simple-portknock-list", "22:7481,2203,9127\n22:5821,3307,6113\n", 2,
                 ["protected port 22", "line 1"], id="duplicate-port"),
    pytest.param("firewall/simple-portknock-list", "22:7481,2203,9127\n443:5821,9127,6113\n", 2,
                 ["knock port 9127"], id="shared-knock-port"),
    pytest.param("firewall/simple-portknock-list", b"22:7481,2203,9127\n# caf\xe9\n", 2,
                 ["invalid UTF-8"], id="invalid-utf8"),
    pytest.param("firewall/simple-portknock-list", "22:1,2,3 # ssh\n", 1,
                 ["comments"], id="trailing-comment"),
]


@pytest.mark.parametrize(("name", "content", "line", "words"), CONFIG_ERRORS)
def test_config_error_exits_3_with_one_error_line(root, capsys, name, content, line, words):
    path = root / "etc" / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert awp(root, "check") == 3
    error = one_error_line(capsys)
    assert error.startswith(f"awp: error: {path}:{line}: ")
    for word in words:
        assert word in error


def test_missing_settings_file(root, capsys):
    (root / "etc" / "config").unlink()
    assert awp(root, "check") == 3
    assert one_error_line(capsys) == f"awp: error: {root / 'etc' / 'config'}: settings file does not exist"


ADVANCED_ERRORS = [
    pytest.param("2222,2000,SeCrEt7 ,SeCrEtVaLuE2\n", 0o600, 1, ["open secret (field 3)"], id="blank-after-secret"),
    pytest.param("2222,2000,SeCrEtVaLuE1,SeCrEtVaLuE2 2223,2001,SeCrEt\n", 0o600, 1,
                 ["door 2 on this line", "found 3"], id="door-2-of-a-line"),
    pytest.param("# x\n2222,2000,SeCrEtVaLuE1,SeCrEtVaLuE1\n", 0o600, 2, ["the same"], id="open-is-close"),
    pytest.param("2222,2000,SeCrEtVaLuE1,SeCrEtVaLuE2 \n", 0o600, 1, ["close secret (field 4)"], id="space"),
    pytest.param("2222,2000,SeCrEtVaLuE1,SeCrEtVaLuE2\n", 0o644, None, ["0644", "fix it with: chmod 600 /"],
                 id="mode-0644"),
]


@pytest.mark.parametrize(("content", "mode", "line", "words"), ADVANCED_ERRORS)
def test_advanced_list_error_never_shows_the_secret(root, capsys, content, mode, line, words):
    if os.geteuid() != 0:
        pytest.skip("the advanced list must be owned by root")
    (root / "etc" / "config").write_text('FW_PORTKNOCK="yes"\nFW_PORTKNOCK_ADVANCED="yes"\n')
    path = root / "etc" / "firewall" / "advanced-portknock-list"
    path.write_text(content)
    path.chmod(mode)
    assert awp(root, "check") == 3
    error = one_error_line(capsys)
    assert error.startswith(f"awp: error: {path}:{line}: " if line else f"awp: error: {path}: ")
    for word in words:
        assert word in error
    assert SECRET_MARK not in error


@pytest.mark.parametrize(("strict", "code"), [("no", 0), ("yes", 3)])
def test_short_secrets_of_the_aeo_example_warn_and_strict_refuses_them(root, capsys, strict, code):
    if os.geteuid() != 0:
        pytest.skip("the advanced list must be owned by root")
    (root / "etc" / "config").write_text(f'FW_PORTKNOCK="yes"\nFW_PORTKNOCK_ADVANCED="yes"\n'
                                         f'FW_PORTKNOCK_STRICT="{strict}"\n')
    path = root / "etc" / "firewall" / "advanced-portknock-list"
    path.write_text("22,2000,hipjazz,superawesome\n23,2001,elite,october\n")
    path.chmod(0o600)
    (root / "etc" / "firewall" / "simple-portknock-list").write_text("")
    assert awp(root, "check") == code
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert not any(s in shown for s in ("hipjazz", "superawesome", "elite", "october"))
    if code:
        assert one_error_line_of(captured.err).startswith(f"awp: error: {path}:1: door 22: open secret (field 3)")
    else:
        assert captured.err.count("awp: warning:") == 4  # 3 short secrets, and the empty simple list
        assert "2 advanced door(s)" in captured.out


def one_error_line_of(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["-s"], ["-f"], ["--dry-run", "check"], ["--force", "check"]],
                         ids=["s-alone", "f-alone", "dry-run-without-apply", "force-without-apply"])
def test_usage_error_exits_2(root, capsys, args):
    assert awp(root, *args) == 2
    assert one_error_line(capsys).startswith("awp: error: ")


def test_no_command_is_a_usage_error(root, capsys):
    assert awp(root) == 2
    captured = capsys.readouterr()
    assert "usage: awp" in captured.err and "awp: error: nothing to do" in captured.err
    assert "Traceback" not in captured.err


def test_unknown_option_exits_2_through_argparse(root, capsys):
    with pytest.raises(SystemExit) as info:
        awp(root, "--bogus")
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# --- global options go before or after the command --------------------------------------------

COMMANDS = {"check": [], "status": [], "remove": [], "knockd": [], "knock": ["192.0.2.1", "2000", "-"]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("where", ["before", "after", "both", "neither"])
def test_global_options_before_or_after_every_command(command, where):
    from awp.cli import build_parser

    options = ["--root", "/tmp/awp-r", "-v", "-q"]
    before = options if where in ("before", "both") else []
    after = ["--root", "/tmp/awp-after", "-q"] if where == "both" else options if where == "after" else []
    args = build_parser().parse_args([*before, command, *after, *COMMANDS[command]])
    expected = {"before": ("/tmp/awp-r", 1, True), "after": ("/tmp/awp-r", 1, True),
                "both": ("/tmp/awp-after", 1, True), "neither": (None, 0, False)}[where]
    assert (args.root, args.verbose, args.quiet) == expected
    assert args.command == command


def test_root_after_the_command_is_used(root, capsys):
    assert main(["check", "--root", str(root)]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_every_argument_of_every_command_has_help():
    from awp.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for command, parser in subparsers.choices.items():
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, (command, action.dest)
