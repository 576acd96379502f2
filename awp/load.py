"""Read and validate everything under the awp root, before anything touches the kernel."""

from __future__ import annotations

from awp.checks import Finding, check_config, check_forwards, listening_sockets
from awp.doors import load_door_options
from awp.lists import load_advanced, load_simple
from awp.model import Config
from awp.paths import Root
from awp.settings import load_settings


def load_config(root: Root) -> Config:
    """Settings, then only the lists of the modes that are on."""
    settings = load_settings(root.config)
    on = settings.enabled
    simple = load_simple(root.simple_list) if on and settings.simple else ()
    advanced = load_advanced(root.advanced_list) if on and settings.advanced else ()
    options = load_door_options(root.door_options) if on else ()  # optional file
    return Config(settings, simple, advanced, options)


def load_and_check(root: Root) -> tuple[Config, list[Finding]]:
    config = load_config(root)
    findings = check_config(config, listening_sockets())
    if any(o.forwarded for o in config.options):
        findings = [*check_forwards(config), *findings]
    return config, findings
