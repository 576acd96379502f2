"""The listener's observer for door commands (on_open, on_close in portknock-doors).

It turns Decisions (awp.knockd.events) into jobs for the CommandRunner (awp.knockd.actions)
and never runs anything itself:

- action=open of a door with on_open: on_open with AWP_ACTION=open. Advanced doors: an
  accepted open knock. Simple doors: the kernel hands the last knock of a completed
  sequence to the listener through NFLOG (prefix "awp-open PORT"), which makes an open
  Decision of mode simple;
- action=close (an accepted close knock) of a door with on_close: on_close, AWP_ACTION=close;
- expiry: each open is remembered with its deadline (open time + the grant's lifetime,
  FW_PORTKNOCK_AUTOCLOSE, or a simple door's open window; a new open of the same source
  moves it), and `tick()`, called by the listener about once a second, runs on_close with
  AWP_ACTION=expire for every deadline passed. The deadline is the one the kernel keeps
  (both count from the knock), read off the listener's clock: a listener restarted in
  between forgets the opens it had seen, and runs no expire for them.
"""

from __future__ import annotations

import logging

from awp.knockd.actions import Command, CommandRunner, Job
from awp.knockd.events import Decision
from awp.model import Config, DoorOptions

log = logging.getLogger(__name__)
MAX_TRACKED = 100_000  # opens remembered for their expiry; beyond, an expiry is not run


class DoorCommands:
    simple_opens = True  # the listener hands it the simple doors' opens (NFLOG "awp-open PORT")

    def __init__(self, config: Config, runner: CommandRunner):
        self.runner = runner
        self.opens: dict[tuple[int, str], tuple[float, str]] = {}  # (door, src) -> (deadline, mode)
        self.untracked = 0
        self.configure(config)

    def configure(self, config: Config) -> None:
        self.options: dict[int, DoorOptions] = {o.port: o for o in config.options if o.on_open or o.on_close}
        s = config.settings
        self.lifetime = {"simple": s.open_window, "advanced": s.autoclose}
        self.opens = {k: v for k, v in self.opens.items() if k[0] in self.options}

    @property
    def wanted(self) -> bool:
        return bool(self.options)

    def __call__(self, decision: Decision) -> None:
        options = self.options.get(decision.port) if decision.port is not None else None
        if options is None or decision.action not in ("open", "close"):
            return
        key = (decision.port, str(decision.src))
        if decision.action == "open":
            self._remember(key, decision)
            self._queue(options, options.on_open, "open", key[1], decision.mode)
        else:
            self.opens.pop(key, None)
            self._queue(options, options.on_close, "close", key[1], decision.mode)

    def tick(self, now: float) -> None:
        """Run on_close (AWP_ACTION=expire) for every open whose lifetime is over."""
        due = [(key, mode) for key, (deadline, mode) in self.opens.items() if deadline <= now]
        for key, mode in due:
            del self.opens[key]
            options = self.options.get(key[0])
            if options is not None:
                self._queue(options, options.on_close, "expire", key[1], mode)
        self.runner.summary()

    def stop(self) -> None:
        self.runner.stop()

    def _remember(self, key: tuple[int, str], decision: Decision) -> None:
        if not self.options[key[0]].on_close:
            return
        if key not in self.opens and len(self.opens) >= MAX_TRACKED:
            self.untracked += 1
            if self.untracked == 1 or self.untracked % 1000 == 0:
                log.warning("door commands: %d opens not remembered (limit %d): no expire runs for them",
                            self.untracked, MAX_TRACKED)
            return
        lifetime = decision.expires_in if decision.expires_in is not None else self.lifetime[decision.mode]
        self.opens[key] = (decision.time + lifetime, decision.mode)

    def _queue(self, options: DoorOptions, argv: tuple[str, ...], action: str, src: str, mode: str) -> None:
        if not argv:
            return
        job = Job(Command(argv, options.run_as, float(options.timeout)), str(options.port), action, src,
                  options.port, mode)
        if self.runner.submit(job) != "queued":
            log.debug("command %s door=%d src=%s not queued (coalesced or dropped)", action, options.port, src)
