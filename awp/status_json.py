"""`awp status --json`: the status as one JSON document (schema in awp(8), STATUS)."""

from __future__ import annotations

SCHEMA = 1


def status_document(st) -> dict:
    """st: awp.workflow.Status. Times are seconds left as the kernel reports them."""
    config, seen = st.config, st.inspection
    doors = [{"port": d.port, "mode": "simple", "knock": _simple_knock(d),
              "defined_at": str(d.origin)} for d in config.active_simple]
    doors += [{"port": d.port, "mode": "advanced", "knock": {"proto": "udp", "ports": [d.knock_port]},
               "defined_at": str(d.origin)} for d in config.active_advanced]
    for door in doors:
        let_in, dropped = seen.counters.get(door["port"], (None, None))
        door["let_in"], door["dropped"] = let_in, dropped
        options = config.options_for(door["port"])
        if options is not None:
            door["options"] = _options(options)
    doc = {
        "schema": SCHEMA,
        "enabled": config.settings.enabled,
        "backend": seen.backend,
        "doors": sorted(doors, key=lambda d: d["port"]),
        "sources": [{"port": s.port, "source": s.source, "state": _state(s.state), "step": _step(s.state),
                     "by": s.state.partition(" by ")[2] or None,
                     "seconds_left": s.seconds_left} for s in seen.sources],
        "refused": dict(seen.refused),
        "kernel_matches_config": seen.matches,
        "differs": list(seen.differs),
        "listener": {"running": st.listener_pid is not None, "pid": st.listener_pid,
                     "supervisor_pid": st.supervisor_pid,
                     "replay_cache": (st.listener_state or {}).get("replay_cache"),
                     "decisions": (st.listener_state or {}).get("decisions")},
        "elsewhere": list(st.elsewhere),
        "ban": _ban(config.settings, seen),
        "confirm": _confirm(getattr(st, "confirm", None)),
    }
    fleet = (st.listener_state or {}).get("fleet")
    if fleet is not None:  # fleet mode (awp(8), FLEET): this node, the store, its health, others' grants
        doc["fleet"] = fleet
    return doc


def _simple_knock(door) -> dict:
    """{"proto": "tcp", "ports": [...]}; a door with UDP knocks also lists each knock's protocol."""
    knock = {"proto": "tcp" if not door.udp else "mixed", "ports": list(door.knocks)}
    if door.udp:
        knock["protos"] = [door.proto(k) for k in door.knocks]
    return knock


def _options(options) -> dict:
    return {"ports": [list(r) for r in options.ports],
            "forward": str(options.forward) if options.forward else None,
            "forward6": str(options.forward6) if options.forward6 else None,
            "on_open": list(options.on_open), "on_close": list(options.on_close),
            "run_as": options.run_as, "timeout": options.timeout, "defined_at": str(options.origin)}


def _ban(s, seen) -> dict:
    """FW_PORTKNOCK_BAN: its settings, the banned sources and the kernel's counters (None: off)."""
    counters = seen.ban_counters
    return {"enabled": s.ban, "after": s.ban_after, "window": s.ban_window, "time": s.ban_time,
            "banned": [{"source": src, "seconds_left": left} for src, left in seen.banned],
            "dropped": counters.get("dropped") if s.ban else None,
            "kernel_bans": counters.get("kernel_bans") if s.ban else None}


def _confirm(state: dict | None) -> dict | None:
    """A pending awp -s -f --confirm (awp(8), CONFIRM OR ROLL BACK), or None."""
    if state is None:
        return None
    return {"applied_at": state.get("applied_at"), "seconds_left": state.get("seconds_left"),
            "timer_running": bool(state.get("timer_pid"))}


def _state(label: str) -> str:
    return "knocking" if label.startswith("knocking") else label.partition(" by ")[0]


def _step(label: str) -> list[int] | None:
    """"knocking 2/5" -> [2, 5] (knocks done, knocks in the sequence)."""
    if not label.startswith("knocking "):
        return None
    done, total = label.split()[1].split("/")
    return [int(done), int(total)]
