"""awp.lists, the simple list: every bad line is refused with file, line and field (the
advanced list: test_lists_advanced.py).

The simple list is read through load_simple() from a real file, so the file-level checks
(size, encoding, control characters) are exercised too.
"""

from __future__ import annotations

import os
import tracemalloc

import pytest
from list_helpers import refused, write

from awp import lists
from awp.checks import check_config
from awp.model import Config, Settings
from awp.textfile import MAX_FILE_BYTES

GOOD = "8080:31001,31337,30999\n"  # line 1 of most test files; the bad line is line 2


# --- simple list: one bad line ----------------------------------------------------------

SIMPLE_BAD = [
    pytest.param("22 1,2,3", ["door 1 on this line", 'exactly one ":"'], id="space-for-colon"),
    pytest.param("22:1,2:3", ['exactly one ":"'], id="two-colons"),
    pytest.param("22", ['exactly one ":"'], id="no-colon"),
    pytest.param(":1,2,3", ["protected port", "missing"], id="no-port"),
    pytest.param("22:", ["knock sequence", "empty"], id="no-knocks"),
    pytest.param("22:1,,3", ["knock 2", "empty"], id="double-comma"),
    pytest.param("22:1,2,3,", ["knock 4", "empty"], id="trailing-comma"),
    pytest.param(",22:1,2,3", ["protected port", '",22"'], id="leading-comma"),
    pytest.param("0:1,2,3", ["protected port", '"0"', "out of range 1-65535"], id="port-0"),
    pytest.param("65536:1,2,3", ["protected port", '"65536"', "out of range"], id="port-65536"),
    pytest.param("22:7001,70000,7003", ["knock 2", '"70000"', "out of range"], id="knock-70000"),
    pytest.param("22:7001,0,7003", ["knock 2", '"0"', "out of range"], id="knock-0"),
    pytest.param("-1:1,2,3", ["protected port", '"-1"', "not a port number"], id="minus-1"),
    pytest.param("22:7001,-1,7003", ["knock 2", '"-1"'], id="knock-minus-1"),
    pytest.param("+22:1,2,3", ["protected port", '"+22"'], id="plus-22"),
    pytest.param("022:1,2,3", ["protected port", '"022"', "leading zero"], id="leading-zero"),
    pytest.param("22:7001,0722,7003", ["knock 2", '"0722"', "leading zero"], id="knock-leading-zero"),
    pytest.param("0x16:1,2,3", ["protected port", '"0x16"'], id="hex"),
    pytest.param("2_2:1,2,3", ["protected port", '"2_2"'], id="underscore"),
    pytest.param("\u0662\u0662:1,2,3", ["protected port"], id="arabic-indic-digits"),
    pytest.param("\uff12\uff12:1,2,3", ["protected port"], id="fullwidth-digits"),
    pytest.param("22:7001,\uff17\uff10\uff10\uff12", ["knock 2"], id="fullwidth-knock"),
    pytest.param("ssh:1,2,3", ["protected port", '"ssh"'], id="service-name"),
    pytest.param("1000-2000:1,2,3", ["protected port", '"1000-2000"'], id="port-range"),
    pytest.param("22:1000-2000,3,4", ["knock 1", '"1000-2000"'], id="knock-range"),
    pytest.param("22:7001,22,7003", ["knock 2", "(22)", "protected port itself"], id="knock-is-port"),
    pytest.param("22:7001,7001,7003", ["knock 2", "(7001)", "twice in a row"], id="knock-twice-in-a-row"),
    pytest.param("22:7001,7002,7001", ["knock 3", "(7001)", "first as knock 1"], id="knock-twice-apart"),
    pytest.param("22:1,2,3 # ssh", ["comments must be on a line of their own"], id="trailing-comment"),
    pytest.param("22:1,2,3 23:4,5,6 #ssh", ["comments must be on a line of their own"], id="comment-after-2"),
    pytest.param("22:1,2,3#ssh", ["knock 3", '"3#ssh"'], id="glued-comment"),
    pytest.param("22:\t1,2,3", ["knock 1", "whitespace"], id="inner-tab"),
    pytest.param("22:1, 2,3", ["knock 2", "whitespace"], id="inner-space"),
    pytest.param("22:1 ,2,3", ["knock 1", "whitespace"], id="space-before-comma"),
    pytest.param("22 :1,2,3", ["protected port", "whitespace"], id="space-before-colon"),
    pytest.param("22:1,2,3 23: 4,5", ["door 2 on this line", "knock 1", "whitespace"], id="door-2-inner-space"),
    pytest.param("22:7481,2203,9127 23:1,70000,3", ["door 2 on this line", "knock 2", '"70000"'],
                 id="door-2-out-of-range"),
    pytest.param("22:7481,2203,9127\t23:", ["door 2 on this line", "knock sequence", "empty"],
                 id="door-2-no-knocks"),
    pytest.param("22:7481,2203,9127 23:1,2,3 24:5,,6", ["door 3 on this line", "knock 2", "empty"],
                 id="door-3-double-comma"),
    pytest.param("22:7481,2203,9127 ,23:1,2,3", ["knock 3", "whitespace"], id="blank-then-comma"),
    pytest.param("22:1,2,3\u00a0", ["knock 3"], id="trailing-nbsp"),
]


@pytest.mark.parametrize(("line", "words"), SIMPLE_BAD)
def test_simple_bad_line(tmp_path, line, words):
    path = write(tmp_path, f"# doors\n{GOOD}{line}\n")
    refused(lambda: lists.load_simple(path), path, 3, *words)


def test_seventeen_knocks_refused_sixteen_accepted(tmp_path):
    assert lists.MAX_KNOCKS == 16
    knocks = [str(40000 + 7 * i * (-1) ** i) for i in range(lists.MAX_KNOCKS + 1)]
    path = write(tmp_path, f"{GOOD}22:{','.join(knocks)}\n")
    refused(lambda: lists.load_simple(path), path, 2, "knock sequence", "17 knocks", "at most 16")

    path = write(tmp_path, f"{GOOD}22:{','.join(knocks[:16])}\n")
    door = lists.load_simple(path)[1]
    assert door.knocks == tuple(int(k) for k in knocks[:16])


def test_doors_separated_by_blanks_on_one_line(tmp_path):
    """The AEO documentation's example, as printed: two doors on one line."""
    doors = lists.load_simple(write(tmp_path, "# AEO\n22:1,2,3,4,5 23:7,8,9,10,11\n"))
    assert door_lines(doors) == [(22, (1, 2, 3, 4, 5), 2), (23, (7, 8, 9, 10, 11), 2)]


def test_any_run_of_blanks_separates_doors(tmp_path):
    doors = lists.load_simple(write(tmp_path, "  22:7481,2203 \t 443:5821,3307\t8443:1201,1999  \n"))
    assert door_lines(doors) == [(22, (7481, 2203), 1), (443, (5821, 3307), 1), (8443, (1201, 1999), 1)]


def test_duplicate_port_on_one_line_names_both_doors(tmp_path):
    path = write(tmp_path, f"{GOOD}22:7001,7002,7003 22:9001,9002,9003\n")
    exc = refused(lambda: lists.load_simple(path), path, 2, "door 2 on this line", "protected port 22")
    assert "on this line (door 1)" in exc.message


def test_duplicate_protected_port_names_second_line_and_mentions_first(tmp_path):
    path = write(tmp_path, f"22:7001,7002,7003\n{GOOD}\n22:9001,9002,9003\n")
    exc = refused(lambda: lists.load_simple(path), path, 4, "protected port 22")
    assert "line 1" in exc.message


# --- simple list: the file itself -------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "simple-portknock-list"
    refused(lambda: lists.load_simple(path), path, None, "simple knock list", "does not exist")


def test_directory_instead_of_file(tmp_path):
    path = tmp_path / "simple-portknock-list"
    path.mkdir()
    refused(lambda: lists.load_simple(path), path, None, "simple knock list", "not a regular file")


def test_fifo_instead_of_file_is_refused_without_blocking(tmp_path):
    path = tmp_path / "simple-portknock-list"
    os.mkfifo(path)
    refused(lambda: lists.load_simple(path), path, None, "simple knock list", "not a regular file")


def test_unreadable_path_whose_parent_is_a_file(tmp_path):
    parent = write(tmp_path, "not a directory\n", name="firewall")
    path = parent / "simple-portknock-list"
    refused(lambda: lists.load_simple(path), path, None, "cannot read simple knock list")


@pytest.mark.parametrize(("data", "line", "words"), [
    pytest.param(b"22:7001,7002,7003\n# caf\xe9\n", 2, ["invalid UTF-8"], id="latin1-in-comment"),
    pytest.param(b"\n\n22:70\xff01,7002,7003\n", 3, ["invalid UTF-8"], id="invalid-byte"),
    pytest.param(b"22:7001,7002,7003\n\xc3\n", 2, ["invalid UTF-8"], id="truncated-sequence"),
    pytest.param(b"8080:1,2,3\n22:7001,7002,7003\x00\n", 2, ["U+0000"], id="nul"),
    pytest.param(b"8080:1,2,3\n\n22:7001\x1b,7002\n", 3, ["U+001B"], id="escape"),
    pytest.param(b"22:7001,7002,7003\x7f\n", 1, ["U+007F"], id="delete"),
    pytest.param(b"22:7001,7002,7003\r22:1,2,3\n", 1, ["U+000D"], id="lone-cr"),
    pytest.param(b"8080:1,2,3\n\x0c\n", 2, ["U+000C"], id="form-feed"),
])
def test_bad_bytes_are_refused_with_their_line(tmp_path, data, line, words):
    path = write(tmp_path, data)
    refused(lambda: lists.load_simple(path), path, line, *words)


def test_huge_file_is_refused_after_a_bounded_read(tmp_path):
    path = tmp_path / "simple-portknock-list"
    with open(path, "wb") as fh:
        fh.truncate(100 * 1024 * 1024)  # sparse: 100 MB of NULs, no disk used
    tracemalloc.start()
    try:
        refused(lambda: lists.load_simple(path), path, None, "larger than", str(MAX_FILE_BYTES))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_FILE_BYTES, f"reading a 100 MB file allocated {peak} bytes"


# --- simple list: accepted forms --------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n\n", b"   \n\t\n"], ids=["empty", "newlines", "blanks"])
def test_empty_file_is_valid_with_zero_doors_and_check_warns(tmp_path, data):
    assert lists.load_simple(write(tmp_path, data)) == ()
    findings = check_config(Config(Settings(enabled=True), simple=()))
    assert any("no doors" in str(f) for f in findings)


def test_file_of_only_comments_has_zero_doors(tmp_path):
    text = "# awp simple list\n#\n   # indented comment\n\t# tabbed 22:1,2,3\n"
    assert lists.load_simple(write(tmp_path, text)) == ()


def door_lines(doors):
    return [(d.port, d.knocks, d.origin.line) for d in doors]


@pytest.mark.parametrize("data", [
    pytest.param(b"# c\r\n22:7481,2203,9127\r\n\r\n443:5821,3307,6113\r\n", id="crlf"),
    pytest.param(b"\xef\xbb\xbf# c\n22:7481,2203,9127\n\n443:5821,3307,6113\n", id="bom"),
    pytest.param(b"# c\n  22:7481,2203,9127  \n\n\t443:5821,3307,6113\t\n", id="outer-whitespace"),
    pytest.param(b"# c\n22:7481,2203,9127\n\n443:5821,3307,6113", id="no-final-newline"),
])
def test_accepted_layouts(tmp_path, data):
    doors = lists.load_simple(write(tmp_path, data))
    assert door_lines(doors) == [(22, (7481, 2203, 9127), 2), (443, (5821, 3307, 6113), 4)]


def test_bom_does_not_shift_line_numbers(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf22:7481,2203,9127\n22:1,2,3\n")
    refused(lambda: lists.load_simple(path), path, 2, "protected port 22", "line 1")


def test_port_bounds_accepted(tmp_path):
    doors = lists.load_simple(write(tmp_path, "1:65535,2,3\n65534:4,65533,5\n"))
    assert door_lines(doors) == [(1, (65535, 2, 3), 1), (65534, (4, 65533, 5), 2)]


def test_door_records_its_origin(tmp_path):
    path = write(tmp_path, f"# x\n{GOOD}")
    (door,) = lists.load_simple(path)
    assert str(door.origin) == f"{path}:2"
