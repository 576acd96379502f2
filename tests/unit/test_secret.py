"""`awp secret` makes secrets that every consumer takes, and `awp check` warns about a secret
used twice, naming both places and never the secret."""

from __future__ import annotations

import math

import pytest

from awp import cli
from awp.checks import PKNOCK_SECRET_MAX, SECRET_ADVICE_BYTES, check_config
from awp.errors import UsageError
from awp.lists import SECRET_MAX_BYTES, parse_advanced
from awp.model import Config, Settings
from awp.secret import ALPHABET, MIN_LENGTH, make_secret

COMPAT = Settings(enabled=True, simple=False, advanced=True, pknock_compat=True)


def warnings(advanced: str, settings: Settings = COMPAT) -> list[str]:
    return [str(f) for f in check_config(Config(settings, (), parse_advanced(advanced, "advanced")))]


def test_default_secret_fits_awp_and_xt_pknock_and_draws_no_warning():
    made = [make_secret() for _ in range(200)]
    assert len(set(made)) == 200
    assert all(len(s.encode()) == PKNOCK_SECRET_MAX and set(s) <= set(ALPHABET) for s in made)
    doors = "".join(f"{3000 + i},{4000 + i},{made[2 * i]},{made[2 * i + 1]}\n" for i in range(100))
    assert warnings(doors) == []


def test_every_symbol_turns_up_and_the_strength_is_what_awp_check_advises():
    seen = set("".join(make_secret(128) for _ in range(20)))
    assert seen == set(ALPHABET)  # 2,560 draws: a missing symbol would show
    assert MIN_LENGTH * math.log2(len(ALPHABET)) >= 8 * SECRET_ADVICE_BYTES


@pytest.mark.parametrize("length", [MIN_LENGTH, 64, SECRET_MAX_BYTES])
def test_other_lengths_fit_the_list(length):
    secret = make_secret(length)
    assert len(secret) == length
    parse_advanced(f"2222,2000,{secret},{make_secret(length)}\n", "advanced")


@pytest.mark.parametrize("length", [0, MIN_LENGTH - 1, SECRET_MAX_BYTES + 1])
def test_lengths_out_of_range_are_a_usage_error(length):
    with pytest.raises(UsageError):
        make_secret(length)


def test_cli_prints_one_line_and_nothing_else(capsys):
    assert cli.main(["secret"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and len(out.strip()) == PKNOCK_SECRET_MAX and "\n" not in out.strip()
    assert cli.main(["secret", "--length", "5"]) == 2


def test_a_secret_reused_across_doors_warns_with_both_lines_and_without_the_secret():
    shared = "shared-secret-1234"
    found = warnings(f"2222,2000,{shared},close-secret-aaaa\n# x\n2223,2001,{shared},close-secret-bbbb\n")
    assert len(found) == 1
    assert found[0].startswith("advanced:3: door 2223: open secret (field 3) is the same as the open secret "
                               "(field 3) of door 2222 (advanced:1)")
    assert shared not in found[0]


def test_one_doors_close_secret_as_anothers_open_secret_warns():
    found = warnings("2222,2000,open-secret-aaaa,close-secret-aaaa\n2223,2001,close-secret-aaaa,open-b-secret\n")
    assert len(found) == 1 and "door 2223: open secret (field 3) is the same as the close secret (field 4)" \
        " of door 2222 (advanced:1)" in found[0]
    assert "close-secret-aaaa" not in found[0]


def test_three_doors_with_one_secret_warn_twice_each_naming_the_first():
    found = warnings("".join(f"{2222 + i},{2000 + i},same-secret-xyz1,close-{i}-secretxx\n" for i in range(3)))
    assert [f.split(":")[1] for f in found] == ["2", "3"] and all("(advanced:1)" in f for f in found)


def test_reuse_is_refused_under_strict():
    from awp.errors import StrictRefused

    strict = Settings(enabled=True, simple=False, advanced=True, strict=True)
    with pytest.raises(StrictRefused) as info:
        warnings("2222,2000,same-secret-xyz1,close-a-secretx\n2223,2001,same-secret-xyz1,close-b-secretx\n", strict)
    assert info.value.line == 2 and "same-secret" not in str(info.value)
