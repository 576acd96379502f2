"""The replay cache: each MAC once, persisted, bounded, and failing closed when tampered with."""

from __future__ import annotations

import os
import stat

import pytest

from awp.knockd import replay as rc

M = 29_000_000  # a minute since the epoch
H1, H2, H3 = ("1" * 64, "2" * 64, "3" * 64)
SKEW = 1


@pytest.fixture
def cache_path(tmp_path):
    return tmp_path / "var" / "lib" / "replay-cache"


def new_cache(path, **kw):
    cache = rc.ReplayCache(path, **kw)
    cache.load()
    return cache


def written(path, entries=((M, H1),)):
    """A valid cache file holding `entries`, as the listener writes it."""
    cache = new_cache(path)
    for minute, mac in entries:
        cache.add(mac, minute, M)
    return path.read_text()


# --- each MAC once, persisted ----------------------------------------------------------------


def test_missing_file_is_empty_and_trusted(cache_path):
    cache = new_cache(cache_path)
    assert not cache.seen(H1) and len(cache) == 0
    assert cache.trust.trusted and cache.trust.reason == "missing"


def test_seen_after_add_and_after_a_restart(cache_path):
    new_cache(cache_path).add(H1, M, M)
    restarted = new_cache(cache_path)
    assert restarted.seen(H1) and not restarted.seen(H2)
    assert restarted.trust.trusted and restarted.trust.reason == "ok"


def test_an_add_without_sync_is_journaled_before_sync_makes_it_durable(cache_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(rc.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    cache = new_cache(cache_path)
    cache.add(H1, M, M)
    synced.clear()
    cache.add(H2, M, M, at=100.0, sync=False)
    assert synced == [] and cache.journal.read_text() == f"{M} {H2}\n"
    assert stat.S_IMODE(cache.journal.stat().st_mode) == 0o600
    crashed = new_cache(cache_path)  # a listener that died before sync(): both count as seen
    assert crashed.seen(H1) and crashed.seen(H2) and crashed.trust.trusted
    cache.sync()
    assert len(synced) == 2 and not cache.journal.exists()  # the file, then its directory
    assert new_cache(cache_path).seen(H2)


def test_a_journal_alone_or_cut_short_still_counts_and_a_foreign_one_distrusts(cache_path):
    cache = new_cache(cache_path)
    cache.add(H1, M, M, sync=False)  # the first knock ever, then a crash: no cache file yet
    with open(cache.journal, "a") as f:
        f.write(f"{M} {H2[:30]}")  # a line cut by the crash
    again = new_cache(cache_path)
    assert again.seen(H1) and not again.seen(H2) and again.trust.reason == "missing"
    os.chmod(cache.journal, 0o644)
    assert not new_cache(cache_path).trust.trusted


def test_accepted_within_is_in_memory_and_bounded_with_the_entries(cache_path):
    cache = new_cache(cache_path, max_entries=2)
    cache.add(H1, M, M, at=100.0)
    assert cache.accepted_within(H1, 104.0, 5.0) and not cache.accepted_within(H1, 106.0, 5.0)
    assert not cache.accepted_within(H1, 99.0, 5.0) and not cache.accepted_within(H2, 100.0, 5.0)
    cache.add(H2, M + 1, M + 1, at=101.0)
    cache.add(H3, M + 2, M + 2, at=102.0)  # evicts H1, the oldest minute
    assert not cache.accepted_within(H1, 102.0, 5.0) and len(cache._accepted_at) == 2
    assert not new_cache(cache_path).accepted_within(H3, 102.0, 5.0)  # not persisted


def test_file_has_a_header_mode_0600_and_no_temp_files(cache_path):
    text = written(cache_path, ((M, H1), (M, H2)))
    assert text.startswith(rc.HEADER + " written=")
    assert text.splitlines()[1:] == [f"{M} {H1}", f"{M} {H2}"]
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["replay-cache"]


def test_bounded_size_evicts_oldest_minute(cache_path):
    cache = new_cache(cache_path, max_entries=2)
    cache.add(H1, M + 1, M)
    cache.add(H2, M - 1, M)
    cache.add(H3, M, M)
    assert cache.seen(H1) and cache.seen(H3) and not cache.seen(H2)


def test_old_minutes_are_pruned_but_kept_while_valid(cache_path):
    cache = new_cache(cache_path)
    cache.add(H1, M, M)
    cache.add(H2, M + 3, M + 3)
    assert cache.seen(H1), "kept while it could still be valid, with a margin"
    cache.add(H3, M + 4, M + 4)
    assert not cache.seen(H1) and H1 not in cache_path.read_text()


def test_failed_write_leaves_no_temp_file(cache_path, monkeypatch):
    cache = new_cache(cache_path)
    cache.add(H1, M, M)
    monkeypatch.setattr(rc.os, "replace", lambda *_: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        cache.add(H2, M, M)
    monkeypatch.undo()
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["replay-cache"]
    assert new_cache(cache_path).seen(H1)


# --- fails closed ----------------------------------------------------------------------------


def tampered(path, how):
    text = written(path)
    if how == "emptied":
        path.write_text("")
    elif how == "truncated":
        path.write_text(text[: len(text) - 10])
    elif how == "junk prepended":
        path.write_text("junk\n" + text)
    elif how == "corrupt line":
        path.write_text(text + "garbage\n")
    elif how == "edited":
        path.write_text(text.replace(H1, H2))
    elif how == "old format":
        path.write_text(f"{M} {H1}\n")
    os.chmod(path, 0o644 if how == "loose mode" else 0o600)


@pytest.mark.parametrize("how", ["emptied", "truncated", "junk prepended", "corrupt line", "edited",
                                 "old format", "loose mode"])
def test_a_tampered_file_is_not_trusted(cache_path, how):
    tampered(cache_path, how)
    cache = new_cache(cache_path)
    assert not cache.trust.trusted
    assert str(cache_path) in cache.trust.reason


def test_special_files_do_not_block_and_are_not_trusted(cache_path, tmp_path):
    cache_path.parent.mkdir(parents=True)
    os.mkfifo(cache_path, 0o600)
    assert not new_cache(cache_path).trust.trusted  # returns at once: O_NONBLOCK
    os.unlink(cache_path)
    os.symlink(tmp_path / "elsewhere", cache_path)
    (tmp_path / "elsewhere").write_text(written(tmp_path / "x" / "c"))
    cache = new_cache(cache_path)
    assert not cache.trust.trusted and "symbolic link" in cache.trust.reason


def test_distrust_counts_every_minute_up_to_start_plus_skew_as_seen(cache_path):
    cache = new_cache(cache_path)
    cache.distrust("test", M, SKEW)
    assert cache.seen(H1, M - 1) and cache.seen(H1, M + SKEW)
    assert not cache.seen(H1, M + SKEW + 1)
    assert not cache.seen(H1)  # without a minute: only what it really holds


def test_missing_while_grants_exist_is_not_trusted(cache_path):
    cache = new_cache(cache_path)
    assert not cache.check_grants([1_700_000_000.0], M, SKEW).trusted
    assert "missing while grants exist" in cache.trust.reason


def test_a_grant_newer_than_the_file_means_lost_entries(cache_path):
    written(cache_path)
    cache = new_cache(cache_path)
    assert cache.check_grants([cache.trust.written - 100], M, SKEW).trusted
    assert not cache.check_grants([cache.trust.written + 60], M, SKEW).trusted


def test_path_problems_name_the_path(tmp_path):
    base = tmp_path / "root"
    path = base / "var" / "lib" / "replay-cache"
    assert rc.path_problem(path) is None
    (base / "var").mkdir(parents=True)
    (base / "var" / "lib").write_text("a file")
    assert "not a directory" in rc.path_problem(path) and str(base / "var" / "lib") in rc.path_problem(path)
    (base / "var" / "lib").unlink()
    path.mkdir(parents=True)
    assert "not a regular file" in rc.path_problem(path)
    path.rmdir()
    os.symlink("/tmp", base / "var" / "lib" / "x")
    os.symlink(base / "var" / "lib" / "x", path)
    assert "symbolic link" in rc.path_problem(path)
