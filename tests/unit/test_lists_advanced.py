"""awp.lists, the advanced list: every bad line is refused with file, line and field, and no
message ever shows a secret. Content checks use parse_advanced(); the file checks (owner,
mode, symlink) use load_advanced().
"""

from __future__ import annotations

import os
import types

import pytest
from list_helpers import refused, write

from awp import lists
from awp.errors import ConfigError
from awp.model import Secret

# --- advanced list: content ---------------------------------------------------------------

S1, S2 = "SeCrEtVaLuE1", "SeCrEtVaLuE2"  # every secret in these tests contains "SeCrEt"
SECRET_MARK = "SeCrEt"

ADVANCED_BAD = [
    pytest.param(f"22,2000,{S1}", ["4 comma-separated fields", "found 3"], id="3-fields"),
    pytest.param(f"22,2000,{S1},{S2},SeCrEtVaLuE3", ["found 5"], id="5-fields"),
    pytest.param(f"22,2000,,{S2}", ["open secret (field 3)", "empty"], id="empty-open"),
    pytest.param(f"22,2000,{S1},", ["close secret (field 4)", "empty"], id="empty-close"),
    pytest.param(f"22,2000,{S1},{S1}", ["open secret and close secret are the same"], id="open-is-close"),
    pytest.param(f"22,2000, {S1},{S2}", ["open secret (field 3)", "whitespace"], id="open-leading-space"),
    pytest.param(f"22,2000,{S1} ,{S2}", ["open secret (field 3)", "whitespace"], id="open-trailing-space"),
    pytest.param(f"22,2000,{S1},\t{S2}", ["close secret (field 4)", "whitespace"], id="close-leading-tab"),
    pytest.param(f"22,2000,{S1},{S2} ", ["close secret (field 4)", "whitespace"], id="close-trailing-space"),
    pytest.param(f"22,2000,{S1},SeCrEt\u00a0", ["close secret (field 4)", "whitespace"], id="close-trailing-nbsp"),
    pytest.param(f"22,2000,SeCrEt inner,{S2}", ["door 1 on this line", "found 3", "blank"], id="blank-in-secret"),
    pytest.param(f"22,2000,{S1},{S2} 23,2001,SeCrEtVaLuE3", ["door 2 on this line", "found 3"], id="door-2-3-fields"),
    pytest.param(f"22,2000,{S1},{S2}\t23,2001, SeCrEtVaLuE3,SeCrEtVaLuE4",
                 ["door 2 on this line", "open secret (field 3)", "whitespace"], id="door-2-leading-space"),
    pytest.param(f"22,2000,{S1},{S2} 23,2001,SeCrEtVaLuE3,SeCrEtVaLuE4 ",
                 ["door 2 on this line", "close secret (field 4)", "whitespace"], id="door-2-trailing-space"),
    pytest.param(f"22,2000,{S1},{S2} 23,2001,SeCrEtVaLuE3,SeCrEtVaLuE3", ["door 2 on this line", "the same"],
                 id="door-2-open-is-close"),
    pytest.param(f"22,2000,{S1},{S2} # SeCrEt comment", ["comments must be on a line of their own"],
                 id="trailing-comment"),
    pytest.param(f"22 ,2000,{S1},{S2}", ["protected port (field 1)", "whitespace"], id="port-trailing-space"),
    pytest.param(f"22,2000,{S1 + 'x' * 117},{S2}", ["open secret (field 3)", "longer than 128 bytes"],
                 id="129-bytes"),
    pytest.param(f"22,2000,{S1},SeCrEt{chr(0xe9) * 61}x", ["close secret (field 4)", "longer than 128"],
                 id="129-bytes-utf8"),
    pytest.param(f"22,22,{S1},{S2}", ["knock port (field 2)", "protected port itself"], id="knock-is-port"),
    pytest.param(f"{S1},2000,SeCrEtVaLuE3,{S2}", ["protected port (field 1)"], id="secret-in-port-field"),
    pytest.param(f"22,{S1},SeCrEtVaLuE3,{S2}", ["knock port (field 2)"], id="secret-in-knock-field"),
    pytest.param(f"22,70000,{S1},{S2}", ["knock port (field 2)", "out of range"], id="knock-70000"),
    pytest.param(f"022,2000,{S1},{S2}", ["protected port (field 1)", "leading zero"], id="leading-zero"),
    pytest.param(f",2000,{S1},{S2}", ["protected port (field 1)", "missing"], id="no-port"),
    pytest.param(f"22:2000,{S1},{S2}", ["found 3"], id="simple-syntax"),
]


def assert_no_secret(exc: ConfigError, line: str) -> None:
    """Neither the marker nor any field that could be a secret appears in the message."""
    shown = str(exc)
    assert SECRET_MARK not in shown
    for field in line.split(",")[2:]:
        if field.strip():
            assert field.strip() not in shown


@pytest.mark.parametrize(("line", "words"), ADVANCED_BAD)
def test_advanced_bad_line_named_and_secret_never_shown(line, words):
    text = f"# doors\n8080,2001,SeCrEtVaLuE8,SeCrEtVaLuE9\n{line}\n"
    exc = refused(lambda: lists.parse_advanced(text, "adv"), "adv", 3, *words)
    assert_no_secret(exc, line)


def test_advanced_duplicate_protected_port():
    text = f"22,2000,{S1},{S2}\n# x\n22,2001,SeCrEtVaLuE3,SeCrEtVaLuE4\n"
    exc = refused(lambda: lists.parse_advanced(text, "adv"), "adv", 3, "protected port 22", "line 1")
    assert SECRET_MARK not in str(exc)


@pytest.mark.parametrize("secret", [
    pytest.param("SeCrEt78", id="8-bytes"),
    pytest.param("x" * 128, id="128-bytes"),
    pytest.param("\u00e9" * 64, id="128-bytes-utf8"),
    pytest.param("p\u00e4ssw\u00f6rd-\u79d8\u5bc6", id="non-ascii"),
    pytest.param("x", id="1-byte"),
    pytest.param("hipjazz", id="7-bytes"),
    pytest.param("inner\u00a0nbsp", id="inner-nbsp"),
])
def test_advanced_secret_accepted_as_utf8_bytes_never_truncated(secret):
    (door,) = lists.parse_advanced(f"22,2000,{secret},{S2}\n", "adv")
    assert door.open_secret.value == secret.encode("utf-8")
    assert door.close_secret.value == S2.encode()
    assert (door.port, door.knock_port, door.origin.line) == (22, 2000, 1)


def test_advanced_doors_separated_by_blanks_on_one_line():
    """The AEO documentation's advanced example, both doors on one line."""
    text = "  22,2000,hipjazz,superawesome \t23,2001,elite,october\n"
    doors = lists.parse_advanced(text, "adv")
    assert [(d.port, d.knock_port, d.open_secret.value, d.close_secret.value, d.origin.line) for d in doors] == [
        (22, 2000, b"hipjazz", b"superawesome", 1), (23, 2001, b"elite", b"october", 1)]


def test_advanced_duplicate_port_on_one_line_never_shows_a_secret():
    text = f"22,2000,{S1},{S2} 22,2001,SeCrEtVaLuE3,SeCrEtVaLuE4\n"
    exc = refused(lambda: lists.parse_advanced(text, "adv"), "adv", 1, "door 2 on this line", "(door 1)")
    assert SECRET_MARK not in str(exc)


def test_advanced_accepted_layouts():
    text = f"# c\n\n22,2000,{S1},{S2}\n\t# c\n443,2001,SeCrEtVaLuE3,SeCrEtVaLuE4"
    doors = lists.parse_advanced(text, "adv")
    assert [(d.port, d.knock_port, d.origin.line) for d in doors] == [(22, 2000, 3), (443, 2001, 5)]


def test_secret_repr_and_str_hide_the_value():
    (door,) = lists.parse_advanced(f"22,2000,{S1},{S2}\n", "adv")
    for shown in (repr(door.open_secret), str(door.open_secret), repr(door), str(door)):
        assert SECRET_MARK not in shown
    assert repr(Secret(b"SeCrEtVaLuE1")) == "Secret(<hidden>)"


# --- advanced list: the file ------------------------------------------------------------


@pytest.fixture
def root_owned(monkeypatch):
    """Files made by the tests are root's when we are root; otherwise pretend they are, so the
    mode and content checks run without root. (The owner check itself needs real root.)"""
    if os.geteuid() == 0:
        return

    def lstat(path):
        st = os.lstat(path)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, 0, st.st_gid,
                               st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    fake_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake_os.lstat = lstat
    monkeypatch.setattr(lists, "os", fake_os)


def advanced_file(tmp_path, text: str | bytes, mode: int = 0o600):
    path = write(tmp_path, text, name="advanced-portknock-list")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_advanced_file_private_mode_accepted(tmp_path, root_owned, mode):
    path = advanced_file(tmp_path, f"22,2000,{S1},{S2}\n", mode)
    assert [d.port for d in lists.load_advanced(path)] == [22]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_advanced_file_readable_by_others_refused(tmp_path, root_owned, mode):
    path = advanced_file(tmp_path, f"22,2000,{S1},{S2}\n", mode)
    exc = refused(lambda: lists.load_advanced(path), path, None, "advanced knock list", f"{mode:04o}")
    assert exc.message.endswith(f"fix it with: chmod 600 {path}")
    assert SECRET_MARK not in str(exc)


def test_advanced_file_symlink_refused(tmp_path, root_owned):
    target = advanced_file(tmp_path, f"22,2000,{S1},{S2}\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    refused(lambda: lists.load_advanced(link), link, None, "symbolic link")


def test_advanced_file_missing_or_not_regular(tmp_path, root_owned):
    path = tmp_path / "advanced-portknock-list"
    refused(lambda: lists.load_advanced(path), path, None, "does not exist")
    path.mkdir()
    refused(lambda: lists.load_advanced(path), path, None, "not a regular file")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_advanced_file_owned_by_non_root_refused(tmp_path):
    path = advanced_file(tmp_path, f"22,2000,{S1},{S2}\n")
    os.chown(path, 1, -1)
    exc = refused(lambda: lists.load_advanced(path), path, None, "owned by uid 1", "not root")
    assert exc.message.endswith(f"fix it with: chown root {path}")


FILE_BAD = [
    pytest.param(f"22,2000,{S1},{S2}\n22,2001,SeCrEt\x01VaLuE3,SeCrEtVaLuE4\n".encode(), 2, ["U+0001"],
                 id="control-char-in-secret"),
    pytest.param(f"22,2000,{S1},{S2}\x00\n".encode(), 1, ["U+0000"], id="nul-after-secret"),
    pytest.param(b"# x\n22,2000,SeCrEt\xffVaLuE1,SeCrEtVaLuE2\n", 2, ["invalid UTF-8"],
                 id="invalid-utf8-in-secret"),
    pytest.param(f"# x\r\n22,2000,SeCrEt7 ,{S2}\r\n".encode(), 2, ["open secret (field 3)", "whitespace"],
                 id="crlf-secret-then-space"),
]


@pytest.mark.parametrize(("data", "line", "words"), FILE_BAD)
def test_advanced_file_bad_content_never_shows_the_secret(tmp_path, root_owned, data, line, words):
    path = advanced_file(tmp_path, data)
    exc = refused(lambda: lists.load_advanced(path), path, line, *words)
    assert SECRET_MARK not in str(exc)


def test_advanced_file_crlf_and_bom_accepted(tmp_path, root_owned):
    path = advanced_file(tmp_path, f"\ufeff# x\r\n22,2000,{S1},{S2}\r\n".encode())
    (door,) = lists.load_advanced(path)
    assert (door.port, door.origin.line, door.close_secret.value) == (22, 2, S2.encode())
