"""`awp status --watch`: a live view of the doors, the sources and the listener's decisions.

CLI side (like awp.cli it prints, through rich). It reads what `awp status` reads
(awp.workflow.status: the kernel through the backend, the listener's state file) once per
interval and redraws one frame in place. A frame has a bounded number of lines whatever the
number of sources: counts per door and step, then the top few sources, never one row each.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from awp.errors import AwpError

INTERVAL_MIN, INTERVAL_MAX = 0.2, 3600.0


@dataclass(frozen=True)
class Limits:
    """Rows per section, so that a frame fits the terminal's height."""

    doors: int = 8
    steps: int = 8
    top: int = 5
    decisions: int = 6

    @classmethod
    def for_height(cls, height: int) -> Limits:
        # 14 fixed lines: the header, 4 titles, 4 column headers, 4 notes, the listener line
        spare = max(8, height - 14)
        doors, steps = max(2, spare // 4), max(2, spare // 4)
        top = max(2, spare // 4)
        return cls(doors, steps, top, max(2, spare - doors - steps - top))


def frame(st, now: float, interval: float, limits: Limits = Limits(), previous: dict | None = None) -> Group:
    """One frame of the view for `st` (awp.workflow.Status) at wall-clock `now`."""
    config, seen = st.config, st.inspection
    parts = [_header(st, now, interval), _doors(config, seen, limits.doors)]
    parts += _sources(seen.sources, limits)
    if seen.refused and any(seen.refused.values()):
        parts.append(Text("a full set refused new sources: " + ", ".join(f"{k} {v}" for k, v in seen.refused.items()),
                          style="yellow"))
    decisions = (st.listener_state or {}).get("decisions") if st.listener_pid else None
    if isinstance(decisions, dict):
        parts += _decisions(decisions, limits.decisions, previous)
    parts.append(Text(_listener(st)))
    return Group(*parts)


def error_frame(message: str, now: float, interval: float) -> Group:
    return Group(Text(f"awp status {_clock(now)}  every {interval:g} s  (Ctrl-C ends)", style="bold"),
                 Text(f"awp: error: {message}", style="red"), Text("retrying at the next refresh"))


def _clock(now: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(now))


def _header(st, now: float, interval: float) -> Text:
    seen = st.inspection
    kernel = "kernel matches the configuration" if seen.matches else f"kernel differs: {', '.join(seen.differs)}"
    text = Text(f"awp status {_clock(now)}  every {interval:g} s  {seen.backend}  ", style="bold")
    text.append(kernel, style="bold" if seen.matches else "bold red")
    return text


def _table(columns: list[str]) -> Table:
    """Compact: no borders, header underlined, two spaces between columns."""
    table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), header_style="bold underline")
    for name in columns:
        wraps = name in ("knock", "why")
        table.add_column(name, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis",
                         justify="left" if wraps or name in ("port", "mode", "source", "state") else "right")
    return table


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _doors(config, seen, limit: int) -> Table:
    knocking = Counter(s.port for s in seen.sources if s.state.startswith("knocking"))
    inside = Counter(s.port for s in seen.sources if not s.state.startswith("knocking"))
    rows = [(d.port, "simple", "tcp " + ",".join(map(str, d.knocks))) for d in config.active_simple]
    rows += [(d.port, "advanced", f"udp {d.knock_port} otp") for d in config.active_advanced]
    rows.sort(key=lambda r: (-(knocking[r[0]] + inside[r[0]]), r[0]))  # the busiest doors first
    table = _table(["port", "mode", "knock", "let in", "dropped", "knocking", "open"])
    for port, mode, knock in rows[:limit]:
        let_in, dropped = seen.counters.get(port, ("-", "-"))
        table.add_row(str(port), mode, knock, _n(let_in), _n(dropped), _n(knocking[port]), _n(inside[port]))
    more = f"{len(rows) - limit:,} more door(s), the least busy; awp status lists all" if len(rows) > limit else ""
    return _section(f"doors ({len(rows)})" + ("" if config.settings.enabled else ", FW_PORTKNOCK is off"),
                    table, more)


def _section(title: str, table: Table, note: str = "") -> Group:
    parts = [Text(title, style="bold"), table]
    if note:
        parts.append(Text("  " + note, style="dim"))
    return Group(*parts)


def _sources(sources, limits: Limits) -> list:
    mid = sum(1 for s in sources if s.state.startswith("knocking"))
    title = f"sources {len(sources):,}: {mid:,} mid-sequence, {len(sources) - mid:,} open or granted"
    if not sources:
        return [Text(title.split(":")[0] + ": none mid-sequence or open")]
    steps = _table(["port", "state", "sources"])
    counted = Counter((s.port, s.state) for s in sources)
    ordered = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    for (port, state), count in ordered[:limits.steps]:
        steps.add_row(str(port), state, _n(count))
    more = f"{len(ordered) - limits.steps:,} more door/state row(s)" if len(ordered) > limits.steps else ""
    top = _table(["port", "source", "state", "time left"])
    for s in sorted(sources, key=_rank)[:limits.top]:
        top.add_row(str(s.port), s.source, s.state, f"{s.seconds_left:,} s")
    rest = f"{len(sources) - limits.top:,} more; awp status --json lists every source" if len(sources) > limits.top else ""
    return [_section(title, steps, more),
            _section(f"top {min(limits.top, len(sources))}: open first, then furthest along", top, rest)]


def _rank(s):
    """Grants and open windows first (most time left first), then the sources nearest to
    completing their sequence."""
    if not s.state.startswith("knocking"):
        return (0, 0.0, -s.seconds_left, s.port, s.source)
    done, total = (int(x) for x in s.state.split()[1].split("/"))
    return (1, -done / total, -s.seconds_left, s.port, s.source)


def _decisions(decisions: dict, limit: int, previous: dict | None) -> list:
    since = time.strftime("%H:%M:%S", time.localtime(decisions.get("since") or 0))
    doors = decisions.get("doors") or {}
    table = _table(["port", "open", "close", "no-op", "rejected", "new", "why"])
    before = (previous or {}).get("doors") or {}
    rows = sorted(doors.items(), key=lambda item: (-_total(item[1]), item[0]))
    for port, counts in rows[:limit]:
        rejected = counts.get("rejected") or {}
        why = " ".join(f"{r} {n:,}" for r, n in sorted(rejected.items(), key=lambda i: (-i[1], i[0]))[:3])
        new = _total(counts) - _total(before.get(port) or {}) if previous is not None else "-"
        table.add_row(str(port), *(_n(counts.get(k, 0)) for k in ("open", "close", "nothing-to-close")),
                      _n(sum(rejected.values())), _n(new), why or "-")
    notes = []
    if len(rows) > limit:
        notes.append(f"{len(rows) - limit:,} more door(s)")
    if decisions.get("unknown-port"):
        notes.append(f"{decisions['unknown-port']:,} knock(s) on no door's knock port")
    return [_section(f"listener decisions since {since}", table, "; ".join(notes))]


def _total(counts: dict) -> int:
    return sum(counts.get(k, 0) for k in ("open", "close", "nothing-to-close")) + sum(
        (counts.get("rejected") or {}).values())


def _listener(st) -> str:
    if not st.listener_pid:
        return "listener: not running" if st.config.active_advanced else "listener: none (no advanced door)"
    return f"listener: running, pid {st.listener_pid}" + (
        f", supervised by pid {st.supervisor_pid}" if st.supervisor_pid else "")


def watch(fetch, console: Console, interval: float, frames: int | None = None) -> int:
    """Redraw a frame of fetch() (an awp.workflow.Status) every `interval` seconds until
    Ctrl-C (or `frames` frames, for tests). An error (say, a list being edited) shows in
    the frame and the view goes on."""
    if not console.is_terminal:  # a pipe or a file: one frame after the other, like watch(1) -t
        return _loop(fetch, console, interval, frames, lambda frame: console.print(frame, "\n"))
    with Live(console=console, auto_refresh=False, transient=False, vertical_overflow="crop") as live:
        return _loop(fetch, console, interval, frames, lambda frame: live.update(frame, refresh=True))


def _loop(fetch, console: Console, interval: float, frames: int | None, draw) -> int:
    previous, shown = None, 0
    try:
        while frames is None or shown < frames:
            started = time.monotonic()
            now = time.time()
            try:
                st = fetch()
                draw(frame(st, now, interval, Limits.for_height(console.size.height), previous))
                state = (st.listener_state or {}).get("decisions")
                previous = state if isinstance(state, dict) else None
            except AwpError as exc:
                draw(error_frame(str(exc), now, interval))
            shown += 1
            if frames is None or shown < frames:
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    return 0
