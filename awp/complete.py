"""What the bash completion asks awp (etc/bash_completion.d/awp): the ports of the advanced
doors, the ones `awp grant` and `awp revoke` take. Never fails: a completion prints nothing
rather than an error. The advanced list is parsed without its owner and mode check, as only
the ports are printed (and only a user who can read the file gets them)."""

from __future__ import annotations

from awp.errors import AwpError
from awp.lists import parse_advanced
from awp.paths import Root
from awp.settings import load_settings
from awp.textfile import read_text


def door_ports(root_dir: str | None) -> list[int]:
    root = Root.resolve(root_dir)
    try:
        settings = load_settings(root.config)
        if not (settings.enabled and settings.advanced):
            return []
        doors = parse_advanced(read_text(root.advanced_list, what="advanced knock list"), str(root.advanced_list))
    except (AwpError, OSError):
        return []
    return sorted({d.port for d in doors})
