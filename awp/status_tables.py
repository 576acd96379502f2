"""The tables and lines of `awp status` (rich renderables and plain strings), built from the
status the workflow read. Nothing here prints: awp.cli does (it is the only module that
prints); awp.view draws the live view from its own panels."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table


def listener_line(st) -> str:
    if not st.listener_pid:
        return "listener: not running" + (f" (supervisor pid {st.supervisor_pid} is restarting it)"
                                          if st.supervisor_pid else "")
    line = f"listener: running, pid {st.listener_pid}"
    line += f", supervised by pid {st.supervisor_pid}" if st.supervisor_pid else ""
    cache = (st.listener_state or {}).get("replay_cache") or {}
    if cache and not cache.get("trusted", True):
        line += (f"; replay cache NOT trusted ({cache.get('reason')}): knocks of minutes up to "
                 f"{cache.get('floor_minute')} are refused")
    return line


def doors_table(config, counters) -> Table:
    """Numbers never wrap: a knock sequence breaks only after its commas, and only the text
    columns (knock, where the door is defined) give up width when the terminal is narrow."""
    table = Table(title="awp doors" + ("" if config.settings.enabled else " (FW_PORTKNOCK is off)"))
    for column in ("port", "mode", "knock", "let in", "dropped", "defined at"):
        text = column in ("knock", "defined at")
        table.add_column(column, no_wrap=not text, overflow="fold" if text else "ellipsis")
    rows = [(d.port, "simple", simple_knocks(d), d.origin) for d in config.active_simple]
    rows += [(d.port, "advanced", f"udp {d.knock_port} (one-time password)", d.origin)
             for d in config.active_advanced]
    for port, mode, knock, origin in sorted(rows, key=lambda r: r[0]):
        accepted, dropped = counters.get(port, ("-", "-"))
        table.add_row(str(port), mode, knock, str(accepted), str(dropped), f"{Path(origin.path).name} line {origin.line}")
    return table


def simple_knocks(door) -> str:
    if not door.udp:
        return "tcp " + ", ".join(map(str, door.knocks))
    return ", ".join(door.knock_text(k) for k in door.knocks)


def options_lines(config) -> list[str]:
    """What DIR/etc/firewall/portknock-doors adds to each door, one line per door."""
    active = {d.port for d in (*config.active_simple, *config.active_advanced)}
    return [f"door {o.port}: {o.describe()} ({Path(o.origin.path).name} line {o.origin.line})"
            for o in config.options if o.port in active and o.describe()]


def decisions_table(config, decisions: dict) -> Table:
    """The listener's knocks per advanced door since it started (its state file)."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(decisions.get("since") or 0))
    unknown = decisions.get("unknown-port") or 0
    table = Table(title=f"knocks the listener decided since {since}",
                  caption=f"{unknown} knock(s) on no door's knock port" if unknown else None)
    for column in ("port", "knock", "open", "close", "no-op close", "rejected", "why"):
        table.add_column(column, no_wrap=column != "why", overflow="fold" if column == "why" else "ellipsis")
    doors = decisions.get("doors") or {}
    knock_ports = {str(d.port): str(d.knock_port) for d in config.active_advanced}
    for port in sorted(set(doors) | set(knock_ports), key=lambda p: int(p) if p.isdigit() else 0):
        c = doors.get(port) or {}
        rejected = c.get("rejected") or {}
        why = " ".join(f"{r}={n}" for r, n in sorted(rejected.items(), key=lambda i: (-i[1], i[0])))
        table.add_row(port, knock_ports.get(port, "-"), *(str(c.get(k, 0)) for k in ("open", "close", "nothing-to-close")),
                      str(sum(rejected.values())), why or "-")
    return table


def sources_table(sources) -> Table:
    table = Table(title="sources (read from the kernel)")
    for column in ("port", "source", "state", "time left"):
        table.add_column(column, no_wrap=column != "state", overflow="fold" if column == "state" else "ellipsis")
    for s in sources:
        table.add_row(str(s.port), s.source, s.state, f"{s.seconds_left} s")
    if not sources:
        table.add_row("-", "-", "no source is mid-sequence or open", "-")
    return table


def banned_table(s, seen) -> Table:
    c = seen.ban_counters
    table = Table(title=f"banned sources ({s.ban_after} failures within {s.ban_window} s bar a source from "
                        f"the knock ports for {s.ban_time} s)",
                  caption=f"{c.get('dropped', 0)} packets from banned sources dropped; "
                          f"{c.get('kernel_bans', 0)} bans by the kernel (simple mode)")
    for column in ("source", "time left"):
        table.add_column(column, no_wrap=True)
    for src, left in seen.banned:
        table.add_row(src, f"{left} s")
    if not seen.banned:
        table.add_row("-", "no source is banned")
    return table


def remote_grants_table(remote: list) -> Table:
    """Fleet mode: the grants this node applied for another node's knocks."""
    table = Table(title="grants from other nodes")
    for column in ("port", "source", "node", "time left"):
        table.add_column(column, no_wrap=True)
    for g in remote:
        table.add_row(str(g["port"]), g["source"], g["node"], f"{max(0, int(g['expires'] - time.time()))} s")
    return table
