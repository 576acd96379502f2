"""A small ctypes binding of libnftables (Debian's libnftables1, which `nft` itself uses).

The listener writes each grant in-process through it, so a knock costs no fork and exec
of `nft`. Only the five calls awp needs are bound. Where the library cannot be loaded,
`Nft.available()` is false and the caller runs the `nft` program instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from awp.backend.runner import Result

OUTPUT_JSON = 1 << 4
OUTPUT_TERSE = 1 << 11
_lib = None
_lock = threading.Lock()


def _load():
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        lib = ctypes.CDLL(name, use_errno=True)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).restype = ctypes.c_char_p
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


class Nft:
    """One libnftables context; `run` takes nft commands and returns like a runner does."""

    def __init__(self, flags: int = 0):
        lib = _load()
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)
        lib.nft_ctx_output_set_flags(self._ctx, flags)

    @staticmethod
    def available() -> bool:
        try:
            _load()
        except OSError:
            return False
        return True

    def run(self, commands: str) -> Result:
        lib = _load()
        with _lock:
            rc = lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            out = lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = lib.nft_ctx_get_error_buffer(self._ctx) or b""
        return Result(0 if rc == 0 else 1, out.decode(errors="replace"), err.decode(errors="replace"))
