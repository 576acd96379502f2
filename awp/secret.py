"""`awp secret`: a random secret that fits every place a secret of awp goes.

    awp's advanced list   1 to 128 bytes (awp.lists.SECRET_MAX_BYTES), no comma, no blank,
                          no leading or trailing whitespace; shorter than 8 bytes draws a
                          warning (awp.checks.SECRET_WEAK_BYTES)
    xt_pknock             iptables (libxt_pknock) keeps 31 bytes of a secret
                          (awp.checks.PKNOCK_SECRET_MAX)
    knock.sh, awp knock   a secret of "-" means "read standard input", and one starting with
                          "-" would look like an option

Letters and digits only (62 symbols, 5.95 bits each): 31 of them are 184 bits from the
kernel's CSPRNG (secrets.choice), within xt_pknock's 31 bytes, and need no quoting
anywhere (shell, list file, systemd, YAML).
"""

from __future__ import annotations

import secrets
import string

from awp.checks import PKNOCK_SECRET_MAX
from awp.errors import UsageError
from awp.lists import SECRET_MAX_BYTES

ALPHABET = string.ascii_letters + string.digits
DEFAULT_LENGTH = PKNOCK_SECRET_MAX  # 31 symbols: 184 bits
MIN_LENGTH = 22  # 22 symbols: 131 bits, more than the 16 random bytes awp check advises


def make_secret(length: int = DEFAULT_LENGTH) -> str:
    if not MIN_LENGTH <= length <= SECRET_MAX_BYTES:
        raise UsageError(f"--length {length}: give {MIN_LENGTH} to {SECRET_MAX_BYTES} characters "
                         f"(at most {PKNOCK_SECRET_MAX} for xt_pknock clients)")
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def bits(length: int) -> int:
    import math

    return int(length * math.log2(len(ALPHABET)))

