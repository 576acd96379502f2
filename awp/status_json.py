"""`awp status --json`: the status as one JSON document (schema in awp(8), STATUS)."""

from __future__ import annotations

SCHEMA = 1


def status_document(st) -> dict:
    """st: awp.workflow.Status. Times are seconds left as the kernel reports them."""
    config, seen = st.config, st.inspection
    doors = [{"port": d.port, "mode": "simple", "knock": {"proto": "tcp", "ports": list(d.knocks)},
              "defined_at": str(d.origin)} for d in config.active_simple]
    doors += [{"port": d.port, "mode": "advanced", "knock": {"proto": "udp", "ports": [d.knock_port]},
               "defined_at": str(d.origin)} for d in config.active_advanced]
    for door in doors:
        let_in, dropped = seen.counters.get(door["port"], (None, None))
        door["let_in"], door["dropped"] = let_in, dropped
    doc = {
        "schema": SCHEMA,
        "enabled": config.settings.enabled,
        "backend": seen.backend,
        "doors": sorted(doors, key=lambda d: d["port"]),
        "sources": [{"port": s.port, "source": s.source, "state": _state(s.state), "step": _step(s.state),
                     "seconds_left": s.seconds_left} for s in seen.sources],
        "refused": dict(seen.refused),
        "kernel_matches_config": seen.matches,
        "differs": list(seen.differs),
        "listener": {"running": st.listener_pid is not None, "pid": st.listener_pid,
                     "supervisor_pid": st.supervisor_pid,
                     "replay_cache": (st.listener_state or {}).get("replay_cache")},
        "elsewhere": list(st.elsewhere),
    }
    fleet = (st.listener_state or {}).get("fleet")
    if fleet is not None:  # fleet mode (awp(8), FLEET): this node, the store, its health, others' grants
        doc["fleet"] = fleet
    return doc


def _state(label: str) -> str:
    return "knocking" if label.startswith("knocking") else label


def _step(label: str) -> list[int] | None:
    """"knocking 2/5" -> [2, 5] (knocks done, knocks in the sequence)."""
    if not label.startswith("knocking "):
        return None
    done, total = label.split()[1].split("/")
    return [int(done), int(total)]
