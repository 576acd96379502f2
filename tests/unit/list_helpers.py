"""Shared by test_lists.py and test_lists_advanced.py."""

from __future__ import annotations

import pytest

from awp.errors import ConfigError


def write(tmp_path, data: str | bytes, name: str = "simple-portknock-list"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def refused(call, path, line, *words) -> ConfigError:
    """Assert `call` raises ConfigError for `path`:`line` whose message has every word."""
    with pytest.raises(ConfigError) as info:
        call()
    exc = info.value
    assert (exc.path, exc.line) == (str(path), line), str(exc)
    for word in words:
        assert word in exc.message, f"{word!r} not in {exc.message!r}"
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(exc) == where + exc.message  # what the CLI prints after "awp: error: "
    assert exc.exit_code == 3
    return exc
