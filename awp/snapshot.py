"""Copies of awp's configuration files: what the kernel holds now (DIR/var/lib/awp/applied,
written after every successful apply), and what a pending `--confirm` rolls back to.

The copies keep the files' bytes and modes; directories are 0700 (the advanced list holds
secrets). A copy is written into a temporary directory beside its place and renamed over it,
so a reader sees the old copy or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from awp.paths import Root

NAMES = {"config": lambda r: r.config, "simple-portknock-list": lambda r: r.simple_list,
         "advanced-portknock-list": lambda r: r.advanced_list}


def state_dir(root: Root) -> Path:
    return root.base / "var" / "lib" / "awp"


def applied_dir(root: Root) -> Path:
    return state_dir(root) / "applied"


def take(root: Root, dest: Path) -> None:
    """Copy the configuration files that exist now into `dest` (replaced as a whole)."""
    _replace_dir(dest, lambda tmp: [_copy(NAMES[n](root), tmp / n) for n in NAMES if NAMES[n](root).is_file()])


def copy_dir(src: Path, dest: Path) -> None:
    _replace_dir(dest, lambda tmp: [_copy(f, tmp / f.name) for f in src.iterdir() if f.name in NAMES])


def record_applied(root: Root) -> None:
    """After a successful apply: these files are what the kernel holds."""
    take(root, applied_dir(root))


def forget_applied(root: Root) -> None:
    """After `awp remove`: nothing is applied."""
    shutil.rmtree(applied_dir(root), ignore_errors=True)


def restore(root: Root, src: Path, keep: Path) -> list[str]:
    """Put the files of `src` back into DIR/etc; the ones there now move to `keep` (so an
    admin's edits are not lost); a file that `src` lacks moves away too. Returns the names
    that changed."""
    keep.mkdir(parents=True, exist_ok=True, mode=0o700)
    changed = []
    for name, where in NAMES.items():
        path = where(root)
        saved = src / name
        now = path.read_bytes() if path.is_file() else None
        before = saved.read_bytes() if saved.is_file() else None
        if now == before:
            continue
        if now is not None:
            _copy(path, keep / name)
        if before is None:
            path.unlink()
        else:
            _install(saved, path)
        changed.append(name)
    return changed


def _copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest, follow_symlinks=False)
    os.chmod(dest, os.stat(src).st_mode & 0o777)


def _install(src: Path, dest: Path) -> None:
    """Atomically: a temp file in dest's directory, fsync, rename; mode as src, root's."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(src.read_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, os.stat(src).st_mode & 0o777)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _replace_dir(dest: Path, fill) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        fill(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}.{time.monotonic_ns()}")
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
