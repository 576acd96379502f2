"""`awp metrics`: the status as Prometheus text exposition (format 0.0.4), for the
node-exporter textfile collector. Names and meanings are in awp(8), METRICS.

render() is pure: it takes what `awp status` gathered (awp.workflow.Status: the kernel's
counters and sets through the backend's Inspection, the listener's state file) and returns
the text. A value awp has no data for is left out, never made up: the listener's decision
counters appear once the listener writes them, the set-full refusals on nftables only.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from awp import __version__


class Exposition:
    """Families in order; each gets one # HELP and one # TYPE line, then its samples."""

    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def render(st, now: float, confirm_state: dict | None = None) -> str:
    """st: awp.workflow.Status. now: wall clock seconds."""
    out = Exposition()
    _configuration(out, st)
    _kernel(out, st)
    _listener(out, st, now)
    _decisions(out, (st.listener_state or {}).get("decisions"))
    out.family("awp_confirm_pending", "gauge", "1 while an awp -s -f --confirm waits for awp confirm",
               [({}, confirm_state is not None)])
    if confirm_state is not None and "seconds_left" in confirm_state:
        out.family("awp_confirm_seconds_left", "gauge", "seconds until the pending apply is rolled back",
                   [({}, confirm_state["seconds_left"])])
    return out.text()


def _configuration(out: Exposition, st) -> None:
    config, seen = st.config, st.inspection
    out.family("awp_info", "gauge", "awp version and backend in use (always 1)",
               [({"version": __version__, "backend": seen.backend}, 1)])
    out.family("awp_enabled", "gauge", "1 if FW_PORTKNOCK is on", [({}, config.settings.enabled)])
    out.family("awp_doors", "gauge", "active doors by mode",
               [({"mode": "simple"}, len(config.active_simple)), ({"mode": "advanced"}, len(config.active_advanced))])
    out.family("awp_kernel_matches_config", "gauge", "1 if the kernel holds what the configuration compiles to",
               [({}, seen.matches)])


def _kernel(out: Exposition, st) -> None:
    config, seen = st.config, st.inspection
    counters = sorted(seen.counters.items())
    out.family("awp_door_let_in_total", "counter", "new connections let in on a protected port (kernel rule counter)",
               [({"port": port}, c[0]) for port, c in counters])
    out.family("awp_door_dropped_total", "counter", "packets to a closed protected port dropped or rejected",
               [({"port": port}, c[1]) for port, c in counters])
    out.family("awp_set_full_refusals_total", "counter",
               "new entries a full state set refused (nftables; FW_PORTKNOCK_SET_SIZE)",
               [({"set": name}, n) for name, n in sorted(seen.refused.items())])
    states = Counter((s.port, s.state.partition(" ")[0]) for s in seen.sources)
    ports = sorted({d.port for d in config.active_simple} | {d.port for d in config.active_advanced})
    out.family("awp_sources", "gauge", "sources per door and state (knocking, open, granted), as the kernel holds them",
               [({"port": p, "state": state}, states[(p, state)]) for p in ports
                for state in ("knocking", "open", "granted")])
    hand = Counter(s.port for s in seen.sources if s.state.startswith("granted by"))
    out.family("awp_grants", "gauge", "live grants per advanced door (knocks' and awp grant's)",
               [({"port": d.port}, states[(d.port, "granted")]) for d in sorted(config.active_advanced, key=lambda d: d.port)])
    out.family("awp_grants_by_hand", "gauge", "live grants per advanced door that awp grant made",
               [({"port": d.port}, hand[d.port]) for d in sorted(config.active_advanced, key=lambda d: d.port)])
    if config.settings.ban:  # with the ban off there is nothing to count: no metric
        out.family("awp_banned_sources", "gauge", "sources barred from the knock ports now (FW_PORTKNOCK_BAN)",
                   [({}, len(seen.banned))])
        for key, value in sorted(seen.ban_counters.items()):
            out.family(f"awp_ban_{key}_total", "counter", f"ban counter {key} (FW_PORTKNOCK_BAN)", [({}, value)])


def _listener(out: Exposition, st, now: float) -> None:
    state = st.listener_state or {}
    out.family("awp_listener_up", "gauge", "1 if the advanced-mode listener runs", [({}, st.listener_pid is not None)])
    beat = state.get("heartbeat")
    if st.listener_pid and isinstance(beat, (int, float)):
        out.family("awp_listener_heartbeat_age_seconds", "gauge", "seconds since the listener last wrote its state",
                   [({}, max(0.0, round(now - beat, 3)))])
    cache = state.get("replay_cache")
    if st.listener_pid and isinstance(cache, dict) and "trusted" in cache:
        out.family("awp_listener_replay_cache_trusted", "gauge", "0 while the listener refuses older knocks "
                   "(an untrusted replay cache)", [({}, bool(cache["trusted"]))])
    fleet = state.get("fleet")
    if st.listener_pid and isinstance(fleet, dict) and "connected" in fleet:
        _fleet(out, fleet, now)


def _fleet(out: Exposition, fleet: dict, now: float) -> None:
    """Fleet mode (awp(8), FLEET): this node's link to the fleet's Redis."""
    node = {"node": str(fleet.get("node", ""))}
    out.family("awp_fleet_connected", "gauge", "1 while this node reaches the fleet's Redis (0: degraded)",
               [(node, bool(fleet["connected"]))])
    if isinstance(fleet.get("last_sync"), (int, float)):
        out.family("awp_fleet_last_sync_age_seconds", "gauge", "seconds since this node last heard from the fleet",
                   [(node, max(0.0, round(now - fleet["last_sync"], 3)))])
    if isinstance(fleet.get("unsent"), int):
        out.family("awp_fleet_unsent_grants", "gauge", "this node's grants waiting for the fleet's Redis",
                   [(node, fleet["unsent"])])
    if isinstance(fleet.get("remote_grants"), list):
        out.family("awp_fleet_remote_grants", "gauge", "live grants this node applied for other nodes",
                   [(node, len(fleet["remote_grants"]))])
    if isinstance(fleet.get("ignored_messages"), int):
        out.family("awp_fleet_ignored_messages_total", "counter",
                   "fleet messages that did not verify under the fleet key (since the listener started)",
                   [(node, fleet["ignored_messages"])])


def _decisions(out: Exposition, decisions) -> None:
    """The listener's counters since it started (reset at each start: Prometheus' rate()
    handles that); absent until the listener writes them."""
    if not isinstance(decisions, dict):
        return
    doors = decisions.get("doors") if isinstance(decisions.get("doors"), dict) else {}
    accepted, rejected = [], []
    for port, counts in sorted(doors.items(), key=lambda kv: str(kv[0])):
        if not isinstance(counts, dict):
            continue
        accepted += [({"port": port, "action": a}, counts[a]) for a in ("open", "close", "nothing-to-close")
                     if isinstance(counts.get(a), int)]
        reasons = counts.get("rejected") if isinstance(counts.get("rejected"), dict) else {}
        rejected += [({"port": port, "reason": r}, n) for r, n in sorted(reasons.items()) if isinstance(n, int)]
    out.family("awp_knocks_accepted_total", "counter", "knocks the listener accepted, by door and action",
               accepted)
    out.family("awp_knocks_rejected_total", "counter", "knocks the listener rejected, by door and reason", rejected)
    if isinstance(decisions.get("unknown-port"), int):
        out.family("awp_knocks_unknown_port_total", "counter", "datagrams to a port that is no door's knock port",
                   [({}, decisions["unknown-port"])])
    if isinstance(decisions.get("since"), (int, float)):
        out.family("awp_knock_counters_since_seconds", "gauge", "when the listener's knock counters started (unix time)",
                   [({}, decisions["since"])])


def write_atomically(path: Path, text: str) -> None:
    """What the textfile collector needs: it must never read half a file. A temp file in the
    same directory, fsync, mode 644, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def collect(root) -> str:
    from awp import workflow

    st = workflow.status(root)
    return render(st, time.time(), st.confirm)
