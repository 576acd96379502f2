"""Command line: the only module that prints. Maps AwpError classes to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rich.console import Console

from awp import __version__
from awp import status_tables as tables
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
    p.add_argument("--confirm", type=int, metavar="SECONDS", dest="confirm_seconds",
                   help="with -s -f: put the previous firewall back unless `awp confirm` runs within SECONDS")
    p.add_argument("-V", "--version", action="version", version=f"awp {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    commands = {"check": "validate settings and lists, touch nothing (like sshd -t)",
                "status": "doors, sources mid-sequence or open, time left",
                "remove": "remove every rule and chain awp installed, stop the listener",
                "knockd": "run the advanced-mode listener in the foreground",
                "supervise": "run the listener under awp's supervisor (what awp -s -f starts)",
                "knock": "send a knock (advanced: like client/knock.sh; simple: --sequence), optionally --wait",
                "grant": "open an advanced door for one source by hand (kernel expiry, as a knock)",
                "revoke": "close a grant (a knock's or a hand grant) for one source",
                "secret": "print a strong random secret for the advanced list (fits xt_pknock too)",
                "confirm": "keep what a pending awp -s -f --confirm applied (stops its rollback)",
                "metrics": "print counters and health in the Prometheus text format (textfile collector)",
                "fleet-key": "write a new random fleet key, DIR/etc/fleet.key (fleet mode)"}
    for name, text in commands.items():
        # after the command too; SUPPRESS: an option not given there keeps the value given before it
        _global_options(sub.add_parser(name, help=text), **dict.fromkeys(("root", "verbose", "quiet"),
                                                                          argparse.SUPPRESS))
    sub.choices["status"].add_argument("--json", action="store_true",
                                       help="print the status as JSON (schema in awp(8))")
    _watch_arguments(sub.choices["status"])
    _knock_arguments(sub.choices["knock"])
    _grant_arguments(sub.choices["grant"], sub.choices["revoke"])
    sub.choices["metrics"].add_argument("-o", "--output", metavar="FILE",
                                        help="write FILE atomically instead of printing (e.g. "
                                             "/var/lib/prometheus/node-exporter/awp.prom)")
    sub.choices["secret"].add_argument("--length", type=int, default=31, metavar="N",
                                       help="characters, 22 to 128 (default 31: what xt_pknock keeps)")
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


def _watch_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--watch", action="store_true",
                        help="a live view that refreshes until Ctrl-C (summaries per door and step)")
    status.add_argument("--interval", metavar="S", type=float, default=None,
                        help="with --watch: seconds between refreshes (default 2)")


def _knock_arguments(knock: argparse.ArgumentParser) -> None:
    knock.add_argument("destination", help="the server: an IPv4 or IPv6 address or a host name")
    knock.add_argument("port", nargs="?", help="advanced mode: the door's UDP knock port (1-65535)")
    knock.add_argument("secret", nargs="?", help='advanced mode: the open or close secret of the door, or "-" to '
                                                 "read it from the first line of standard input (keeps it out "
                                                 "of ps and the shell history)")
    knock.add_argument("-s", "--source", dest="source_address", metavar="ADDR",
                       help="the address the server sees, when it is not this host's own (behind NAT: "
                            "the public address); default: the source address the kernel picks")
    knock.add_argument("-r", "--repeat", type=int, default=1, metavar="COUNT",
                       help="send the datagram COUNT times (1-5, 0.4 s apart) in case one is lost; "
                            "the server grants once (default: 1)")
    knock.add_argument("--sequence", metavar="PORTS",
                       help="simple mode instead: knock these ports in order, e.g. 7001,7003,7002/udp "
                            "(TCP SYNs; PORT/udp: one UDP datagram)")
    knock.add_argument("--delay", metavar="MS", type=int, default=100,
                       help="with --sequence: milliseconds between two knocks (default 100)")
    knock.add_argument("--wait", metavar="PORT", help="after knocking, try TCP PORT until it answers; exit 0 "
                                                      "only if it does, 8 if not")
    knock.add_argument("--wait-timeout", metavar="S", type=float, default=10.0,
                       help="with --wait: give up after S seconds in all (default 10)")
    knock.add_argument("--tries", metavar="N", type=int, default=3,
                       help="with --wait: knock up to N times, spread over the timeout (default 3)")


def _grant_arguments(grant: argparse.ArgumentParser, revoke: argparse.ArgumentParser) -> None:
    for parser in (grant, revoke):
        parser.add_argument("address", help="the source: one IPv4 or IPv6 address")
        parser.add_argument("port", help="the advanced door's protected TCP port")
    grant.add_argument("--for", dest="seconds", metavar="SECONDS",
                       help="lifetime in seconds, 1 to FW_PORTKNOCK_AUTOCLOSE (the default; nftables only)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "_ports" in argv[:3]:
        return _complete_ports(argv)
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
    if args.dry_run or args.force or args.confirm_seconds is not None:
        raise UsageError("--dry-run, --force and --confirm go with -s -f")
    commands = {"check": cmd_check, "status": cmd_status, "remove": cmd_remove,
                "knockd": cmd_knockd, "supervise": cmd_supervise, "knock": cmd_knock,
                "grant": cmd_grant, "revoke": cmd_revoke, "secret": cmd_secret, "confirm": cmd_confirm,
                "metrics": cmd_metrics, "fleet-key": cmd_fleet_key}
    if args.command not in commands:
        parser.print_usage(sys.stderr)
        raise UsageError("nothing to do: give -s -f or a command")
    return commands[args.command](root, args)


def _setup_logging(args) -> None:
    level = logging.ERROR if args.quiet else (logging.INFO, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    from awp.knockd.logdest import stderr_formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(stderr_formatter(daemon=args.command in ("knockd", "supervise")))
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
    from awp.checks import listener_notes

    for note in listener_notes(config):
        out.print(f"awp: {note}", markup=False)
    fleet = workflow.fleet_key_note(root, config)
    if fleet:
        out.print(f"awp: {fleet}", markup=False)
    return 0


def cmd_apply(root, args) -> int:
    from awp import confirm, workflow

    _require_root()
    if args.dry_run and args.confirm_seconds is not None:
        raise UsageError("--confirm applies; it does not go with --dry-run")
    if args.confirm_seconds is not None:
        confirm.check_seconds(args.confirm_seconds)
    if not args.dry_run:
        note = confirm.before_apply(root)
        if note:
            err.print(f"awp: warning: {note}", style="yellow", markup=False)
    config, findings = workflow.load(root)
    _print_warnings(findings)
    if args.dry_run:
        plan = workflow.dry_run(config)
        out.print(f"# backend {plan.backend}" + ("" if plan.changed else ": no change"), markup=False)
        for line in tables.options_lines(config):
            out.print(f"# {line}", markup=False)
        out.print(plan.text, end="", markup=False)
        return 0
    ssh = os.environ.get("SSH_CONNECTION")
    if args.confirm_seconds is not None:
        done, state = confirm.apply(root, config, args.confirm_seconds, force=args.force, ssh_connection=ssh)
    else:
        done = workflow.apply(root, config, force=args.force, ssh_connection=ssh)
    if done.listener:
        log.info("listener %s", done.listener)
    for name in done.removed_from:
        out.print(f"awp: removed awp's rules from the {name} backend (now on {done.plan.backend})", markup=False)
    _report_apply(config, done.plan)
    if args.confirm_seconds is not None:
        out.print(f"awp: run awp confirm within {state['seconds']} s to keep this; otherwise the previous "
                  f"firewall comes back (timer survives this session)", markup=False)
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
    from awp import confirm, workflow

    _require_root()
    if confirm.cancel(root):
        out.print("awp: cancelled the pending --confirm (nothing to roll back to after a remove)", markup=False)
    removed = workflow.remove(root)
    out.print(f"awp: removed awp's rules ({', '.join(removed)})" if removed
              else "awp: nothing of awp's was installed", markup=False)
    return 0


def cmd_status(root, args) -> int:
    from awp import workflow

    _require_root()
    if args.watch or args.interval is not None:
        return _watch(root, args)
    st = workflow.status(root)
    if getattr(args, "json", False):
        from awp.status_json import status_document
        import json
        sys.stdout.write(json.dumps(status_document(st), indent=2) + "\n")  # not rich: 100k sources
        return 0
    config, seen = st.config, st.inspection
    out.print(tables.doors_table(config, seen.counters))
    for line in tables.options_lines(config):
        out.print(line, markup=False)
    out.print(tables.sources_table(seen.sources))
    if config.settings.ban:
        out.print(tables.banned_table(config.settings, seen))
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
    from awp.model import needs_listener

    if needs_listener(config) or st.listener_pid:
        out.print(tables.listener_line(st), markup=False)
    fleet = (st.listener_state or {}).get("fleet")
    if fleet:
        _print_fleet(fleet)
    decisions = (st.listener_state or {}).get("decisions")
    if st.listener_pid and isinstance(decisions, dict):
        out.print(tables.decisions_table(config, decisions))
    _confirm_line(st.confirm)
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
    if fleet.get("remote_grants"):
        out.print(tables.remote_grants_table(fleet["remote_grants"]))


def _watch(root, args) -> int:
    from awp import view, workflow

    interval = 2.0 if args.interval is None else args.interval
    if not args.watch:
        raise UsageError("--interval goes with --watch")
    if args.json:
        raise UsageError("--watch draws a terminal view; --json prints one document")
    if not view.INTERVAL_MIN <= interval <= view.INTERVAL_MAX:
        raise UsageError(f"--interval must be {view.INTERVAL_MIN:g} to {view.INTERVAL_MAX:g} seconds")
    return view.watch(lambda: workflow.status(root), Console(highlight=False), interval)


def _confirm_line(state) -> None:
    if state is None:
        return
    if state.get("timer_pid"):
        err.print(f"confirm: the apply of {state['applied_at']} rolls back in {state.get('seconds_left')} s "
                  "unless awp confirm runs", style="yellow", markup=False)
    else:
        err.print("confirm: a pending apply lost its timer; the next awp -s -f puts the previous "
                  "configuration back first", style="yellow", markup=False)
















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
    from awp.knockd import client
    from awp.lists import parse_port
    from awp.model import Origin

    port = None
    if args.wait is not None:
        try:
            port = parse_port(args.wait, "--wait port", Origin("command line", 0))
        except AwpError as exc:
            raise UsageError(exc.message) from None
    knock = _sequence_knock(args) if args.sequence is not None else _advanced_knock(args)
    if port is None:
        times = f" {args.repeat} times" if args.repeat > 1 else ""
        out.print(f"awp: knock sent to {knock()}{times}", markup=False)
        return 0
    tries = client.knock_and_wait(knock, args.destination, port, args.wait_timeout, args.tries)
    out.print(f"awp: TCP port {port} of {args.destination} answers (after {tries} knock(s))", markup=False)
    return 0


def _sequence_knock(args):
    from awp.knockd import client

    if args.port is not None or args.source_address or args.repeat != 1:
        raise UsageError("--sequence takes only the destination (no knock port, secret, --source or --repeat)")
    steps = client.parse_sequence(args.sequence)
    return lambda: client.send_sequence(args.destination, steps, args.delay)


def _advanced_knock(args):
    from awp.knockd import client

    if args.port is None or args.secret is None:
        raise UsageError("an advanced knock needs DST PORT SECRET (or --sequence PORTS for simple mode)")
    secret = sys.stdin.readline().rstrip("\n") if args.secret == "-" else args.secret
    return lambda: client.send_knock(args.destination, args.port, secret, args.source_address, args.repeat)


def cmd_grant(root, args) -> int:
    from awp import grant

    _require_root()
    done = grant.grant(root, args.address, args.port, args.seconds, grant.admin_name())
    if done.note:
        err.print(f"awp: warning: {done.note}", style="yellow", markup=False)
    out.print(f"awp: granted {done.source} on port {done.port} for {done.seconds} s (expires in the kernel)",
              markup=False)
    return 0


def cmd_revoke(root, args) -> int:
    from awp import grant

    _require_root()
    if grant.revoke(root, args.address, args.port, grant.admin_name()):
        out.print(f"awp: revoked {args.address} on port {args.port}; new connections are refused", markup=False)
    else:
        out.print(f"awp: {args.address} had no grant on port {args.port}; nothing to revoke", markup=False)
    return 0


def cmd_secret(root, args) -> int:
    from awp.secret import make_secret

    sys.stdout.write(make_secret(args.length) + "\n")  # not rich: nothing may wrap or colour it
    return 0


def cmd_confirm(root, args) -> int:
    from awp import confirm

    _require_root()
    state = confirm.confirm(root)
    out.print(f"awp: confirmed the apply of {state['applied_at']}; it stays", markup=False)
    return 0


def cmd_metrics(root, args) -> int:
    from awp import metrics

    _require_root()
    text = metrics.collect(root)
    if args.output:
        try:
            metrics.write_atomically(Path(args.output), text)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        sys.stdout.write(text)  # not rich: exact bytes
    return 0


def _complete_ports(argv: list[str]) -> int:
    """`awp [--root DIR] _ports`: the advanced doors' protected ports, one a line, for the
    bash completion (etc/bash_completion.d/awp). Hidden; prints nothing it cannot read."""
    from awp.complete import door_ports

    root = argv[argv.index("--root") + 1] if "--root" in argv[:-1] else None
    sys.stdout.write("".join(f"{port}\n" for port in door_ports(root)))
    return 0
