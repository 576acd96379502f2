"""Command line: the only module that prints. Maps AwpError classes to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from awp import __version__
from awp.errors import EXIT_CODES, AwpError, EnvironmentProblem, UsageError

log = logging.getLogger("awp.cli")
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    p = argparse.ArgumentParser(
        prog="awp", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Port-knocking doors for Linux appliances. Apply with: awp -s -f",
        epilog=f"exit codes:\n{codes}\n\nSee awp(8) and awp-portknock-list(5).")
    _global_options(p, root=None, verbose=0, quiet=False)
    p.add_argument("-s", "--set", action="store_true", help="with -f: validate and apply the firewall")
    p.add_argument("-f", "--firewall", action="store_true", help="with -s: validate and apply the firewall")
    p.add_argument("--dry-run", action="store_true", help="with -s -f: print what would be loaded, load nothing")
    p.add_argument("--force", action="store_true", help="with -s -f: apply even if it closes your SSH port")
    p.add_argument("-V", "--version", action="version", version=f"awp {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    commands = {"check": "validate settings and lists, touch nothing (like sshd -t)",
                "status": "doors, sources mid-sequence or open, time left",
                "remove": "remove every rule and chain awp installed, stop the listener",
                "knockd": "run the advanced-mode listener in the foreground",
                "supervise": "run the listener under awp's supervisor (what awp -s -f starts)",
                "knock": "send an advanced-mode knock (like client/knock.sh)",
                "fleet-key": "write a new random fleet key, DIR/etc/fleet.key (fleet mode)"}
    for name, text in commands.items():
        # after the command too; SUPPRESS: an option not given there keeps the value given before it
        _global_options(sub.add_parser(name, help=text), **dict.fromkeys(("root", "verbose", "quiet"),
                                                                          argparse.SUPPRESS))
    sub.choices["status"].add_argument("--json", action="store_true",
                                       help="print the status as JSON (schema in awp(8))")
    _knock_arguments(sub.choices["knock"])
    sub.choices["fleet-key"].add_argument("--force", action="store_true", dest="force_key",
                                          help="replace an existing key")
    return p


def _global_options(parser: argparse.ArgumentParser, root, verbose, quiet) -> None:
    """--root, -v and -q, accepted before and after the command."""
    parser.add_argument("--root", metavar="DIR", default=root,
                        help="awp root directory (default: $AWP_ROOT or /var/awp)")
    parser.add_argument("-v", "--verbose", action="count", default=verbose, help="more log output (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", default=quiet,
                        help="no informational log lines (warnings and errors still show)")


def _knock_arguments(knock: argparse.ArgumentParser) -> None:
    knock.add_argument("destination", help="the server: an IPv4 or IPv6 address or a host name")
    knock.add_argument("port", help="the door's UDP knock port (1-65535)")
    knock.add_argument("secret", help='the open or close secret of the door, or "-" to read it from the first '
                                      "line of standard input (keeps it out of ps and the shell history)")
    knock.add_argument("-s", "--source", dest="source_address", metavar="ADDR",
                       help="the address the server sees, when it is not this host's own (behind NAT: "
                            "the public address); default: the source address the kernel picks")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        return _dispatch(parser, args)
    except AwpError as exc:
        err.print(f"awp: error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("awp: interrupted", markup=False)
        return 130


def _dispatch(parser: argparse.ArgumentParser, args) -> int:
    from awp.paths import Root

    root = Root.resolve(args.root)
    if args.set or args.firewall:
        if args.command is not None:
            raise UsageError(f"-s -f applies the firewall; it does not go with the command {args.command!r}")
        if not (args.set and args.firewall):
            raise UsageError("apply is spelled: awp -s -f")
        return cmd_apply(root, args)
    if args.dry_run or args.force:
        raise UsageError("--dry-run and --force go with -s -f")
    commands = {"check": cmd_check, "status": cmd_status, "remove": cmd_remove,
                "knockd": cmd_knockd, "supervise": cmd_supervise, "knock": cmd_knock,
                "fleet-key": cmd_fleet_key}
    if args.command not in commands:
        parser.print_usage(sys.stderr)
        raise UsageError("nothing to do: give -s -f or a command")
    return commands[args.command](root, args)


def _setup_logging(args) -> None:
    level = logging.ERROR if args.quiet else (logging.INFO, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    stamped = args.command in ("knockd", "supervise") and "JOURNAL_STREAM" not in os.environ
    handler.setFormatter(logging.Formatter(("%(asctime)s " if stamped else "") + "%(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if args.verbose == 0 and not args.quiet:
        for noisy in ("awp.backend.iptables", "awp.backend.nftables", "awp.knockd.control", "awp.workflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("this command changes or reads the kernel firewall; run it as root")


def _print_warnings(findings) -> None:
    for finding in findings:
        err.print(f"awp: warning: {finding}", style="yellow", markup=False)
        log.debug("warning %s", finding)


# --- commands ----------------------------------------------------------------------------


def cmd_check(root, args) -> int:
    from awp import workflow

    config, findings = workflow.load(root)
    _print_warnings(findings)
    s = config.settings
    out.print(f"awp: configuration OK: {len(config.active_simple)} simple door(s), "
              f"{len(config.active_advanced)} advanced door(s)"
              + ("" if s.enabled else " (FW_PORTKNOCK is off: nothing would be protected)"), markup=False)
    return 0


def cmd_apply(root, args) -> int:
    from awp import workflow

    _require_root()
    config, findings = workflow.load(root)
    _print_warnings(findings)
    if args.dry_run:
        plan = workflow.dry_run(config)
        out.print(f"# backend {plan.backend}" + ("" if plan.changed else ": no change"), markup=False)
        out.print(plan.text, end="", markup=False)
        return 0
    done = workflow.apply(root, config, force=args.force, ssh_connection=os.environ.get("SSH_CONNECTION"))
    if done.listener:
        log.info("listener %s", done.listener)
    for name in done.removed_from:
        out.print(f"awp: removed awp's rules from the {name} backend (now on {done.plan.backend})", markup=False)
    _report_apply(config, done.plan)
    return 0


def _report_apply(config, plan) -> None:
    if not plan.changed:
        out.print("awp: firewall already up to date; nothing changed", markup=False)
    elif not (config.active_simple or config.active_advanced):
        out.print("awp: port knocking is off; removed awp's rules", markup=False)
    else:
        ports = sorted({d.port for d in config.active_simple} | {d.port for d in config.active_advanced})
        out.print(f"awp: applied ({plan.backend}); protected TCP port(s): {', '.join(map(str, ports))}",
                  markup=False)


def cmd_remove(root, args) -> int:
    from awp import workflow

    _require_root()
    removed = workflow.remove(root)
    out.print(f"awp: removed awp's rules ({', '.join(removed)})" if removed
              else "awp: nothing of awp's was installed", markup=False)
    return 0


def cmd_status(root, args) -> int:
    from awp import workflow

    _require_root()
    st = workflow.status(root)
    if getattr(args, "json", False):
        from awp.status_json import status_document
        import json
        sys.stdout.write(json.dumps(status_document(st), indent=2) + "\n")  # not rich: 100k sources
        return 0
    config, seen = st.config, st.inspection
    out.print(_doors_table(config, seen.counters))
    out.print(_sources_table(seen.sources))
    if seen.refused and any(seen.refused.values()):
        err.print("awp: warning: a full set refused new entries: "
                  + ", ".join(f"{k} {v}" for k, v in seen.refused.items()), style="yellow", markup=False)
    out.print(f"backend: {seen.backend}", markup=False)
    out.print("kernel: awp's rules match the configuration" if seen.matches else
              f"kernel: {' and '.join(seen.differs)} rules differ from the configuration; run awp -s -f",
              markup=False)
    for name in st.elsewhere:
        err.print(f"awp: warning: the {name} backend still holds awp's rules; awp -s -f or awp remove "
                  "takes them out", style="yellow", markup=False)
    if config.active_advanced or st.listener_pid:
        out.print(_listener_line(st), markup=False)
    fleet = (st.listener_state or {}).get("fleet")
    if fleet:
        _print_fleet(fleet)
    return 0


def _print_fleet(fleet: dict) -> None:
    import time

    synced = fleet.get("last_sync")
    ago = f"{max(0, time.time() - synced):.1f} s ago" if synced else "never"
    line = f"fleet: node {fleet['node']}, store {fleet['store']}, last sync {ago}"
    if fleet.get("connected"):
        out.print(line + ", connected", markup=False)
    else:
        err.print(line + f"; fleet degraded ({fleet.get('degraded')})"
                  + (": opens are refused (FW_PORTKNOCK_FLEET_REQUIRED)" if fleet.get("required") else
                     ": knocks use this node's replay cache and grants"), style="yellow", markup=False)
    remote = fleet.get("remote_grants") or []
    if remote:
        table = Table(title="grants from other nodes")
        for column in ("port", "source", "node", "time left"):
            table.add_column(column, no_wrap=True)
        for g in remote:
            table.add_row(str(g["port"]), g["source"], g["node"], f"{max(0, int(g['expires'] - time.time()))} s")
        out.print(table)


def _listener_line(st) -> str:
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


def _doors_table(config, counters) -> Table:
    """Numbers never wrap: a knock sequence breaks only after its commas, and only the text
    columns (knock, where the door is defined) give up width when the terminal is narrow."""
    table = Table(title="awp doors" + ("" if config.settings.enabled else " (FW_PORTKNOCK is off)"))
    for column in ("port", "mode", "knock", "let in", "dropped", "defined at"):
        text = column in ("knock", "defined at")
        table.add_column(column, no_wrap=not text, overflow="fold" if text else "ellipsis")
    rows = [(d.port, "simple", "tcp " + ", ".join(map(str, d.knocks)), d.origin) for d in config.active_simple]
    rows += [(d.port, "advanced", f"udp {d.knock_port} (one-time password)", d.origin)
             for d in config.active_advanced]
    for port, mode, knock, origin in sorted(rows, key=lambda r: r[0]):
        accepted, dropped = counters.get(port, ("-", "-"))
        table.add_row(str(port), mode, knock, str(accepted), str(dropped), f"{Path(origin.path).name} line {origin.line}")
    return table


def _sources_table(sources) -> Table:
    table = Table(title="sources (read from the kernel)")
    for column in ("port", "source", "state", "time left"):
        table.add_column(column, no_wrap=column != "state", overflow="fold" if column == "state" else "ellipsis")
    for s in sources:
        table.add_row(str(s.port), s.source, s.state, f"{s.seconds_left} s")
    if not sources:
        table.add_row("-", "-", "no source is mid-sequence or open", "-")
    return table


def cmd_knockd(root, args) -> int:
    from awp.knockd.listener import run_listener

    _require_root()
    return run_listener(root)


def cmd_supervise(root, args) -> int:
    from awp.knockd.supervisor import run_supervisor

    _require_root()
    return run_supervisor(root)


def cmd_fleet_key(root, args) -> int:
    from awp import workflow

    _require_root()
    path = workflow.new_fleet_key(root, args.force_key)
    out.print(f"awp: wrote a new fleet key to {path}; copy it (mode 600, owner root) to every node", markup=False)
    return 0


def cmd_knock(root, args) -> int:
    from awp.knockd.client import send_knock

    secret = sys.stdin.readline().rstrip("\n") if args.secret == "-" else args.secret
    sent = send_knock(args.destination, args.port, secret, args.source_address)
    out.print(f"awp: knock sent to {sent}", markup=False)
    return 0
