"""Golden tier: build a Config from a case directory the way awp reads its root."""

from __future__ import annotations

from pathlib import Path

import pytest

from awp.doors import parse_door_options
from awp.lists import parse_advanced, parse_simple
from awp.model import Config
from awp.settings import parse_settings

GOLDEN = Path(__file__).parent


def load_case(case: str) -> Config:
    """GOLDEN/<case>/config, simple-portknock-list and the optional advanced-portknock-list and
    portknock-doors."""
    base = GOLDEN / case
    settings = parse_settings((base / "config").read_text(encoding="utf-8"), "config")
    simple = parse_simple((base / "simple-portknock-list").read_text(encoding="utf-8"), "simple-portknock-list")
    adv = base / "advanced-portknock-list"
    advanced = parse_advanced(adv.read_text(encoding="utf-8"), adv.name) if adv.exists() else ()
    doors = base / "portknock-doors"
    options = parse_door_options(doors.read_text(encoding="utf-8"), doors.name) if doors.exists() else ()
    return Config(settings, simple, advanced, options)


@pytest.fixture(name="load_case")
def load_case_fixture():
    return load_case
