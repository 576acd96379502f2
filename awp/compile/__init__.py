"""Pure compiler: Config -> Ruleset -> iptables-restore text. No I/O, no globals."""

from awp.compile.iptables import compile_family, compile_nat
from awp.compile.ruleset import Chain, KernelState, Rule, Ruleset, render_restore

__all__ = ["Chain", "KernelState", "Rule", "Ruleset", "compile_family", "compile_nat", "render_restore"]
