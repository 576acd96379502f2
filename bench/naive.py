"""The NAIVE peer ruleset: the classic linear xt_recent port-knocking chain, one block of
rules per door, every packet walking every door's block. Pure text generation, no I/O.

For door i (protected port P, knocks k1..kn), in chain NAIVE (hooked at INPUT 1):

    -p tcp --dport P --syn  -m recent --rcheck --seconds W --name nv<i>-o        -j ACCEPT
    -p tcp --dport P                                                            -j DROP
    -p tcp --dport k1 --syn -m recent --set --name nv<i>-s1                      -j DROP
    -p tcp --dport km --syn -m recent --rcheck --seconds T --name nv<i>-s(m-1)
                            -m recent --set --name nv<i>-sm   (nv<i>-o for m = n) -j DROP
    -p tcp -m multiport --dports k1,...,kn                                      -j DROP

after one conntrack ESTABLISHED,RELATED accept at the top, like awp's. It is the cheapest
linear form: the cheap --dport match comes first, so `recent` is consulted only for a
door's own ports, and a wrong knock does not reset anything (the recipes that reset with
`-m recent --remove` on every packet cost more per packet, not less).
"""

from __future__ import annotations

CHAIN = "NAIVE"


def open_list(i: int) -> str:
    return f"nv{i}-o"


def stage_list(i: int, m: int) -> str:
    return f"nv{i}-s{m}"


def door_rules(i: int, port: int, knocks: tuple[int, ...], step: int, window: int) -> list[str]:
    rules = [f"-p tcp --dport {port} --syn -m recent --rcheck --seconds {window} --name {open_list(i)} -j ACCEPT",
             f"-p tcp --dport {port} -j DROP",
             f"-p tcp --dport {knocks[0]} --syn -m recent --set --name {stage_list(i, 1)} -j DROP"]
    for m, knock in enumerate(knocks[1:], start=2):
        done = open_list(i) if m == len(knocks) else stage_list(i, m)
        rules.append(f"-p tcp --dport {knock} --syn -m recent --rcheck --seconds {step} "
                     f"--name {stage_list(i, m - 1)} -m recent --set --name {done} -j DROP")
    rules.append(f"-p tcp -m multiport --dports {','.join(map(str, knocks))} -j DROP")
    return rules


def ruleset(doors: list[tuple[int, tuple[int, ...]]], step: int, window: int) -> str:
    """iptables-restore --noflush text installing NAIVE for `doors` (in this order)."""
    lines = ["*filter", f":{CHAIN} - [0:0]",
             f"-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    for i, (port, knocks) in enumerate(doors):
        lines += [f"-A {CHAIN} {rule}" for rule in door_rules(i, port, knocks, step, window)]
    lines += [f"-I INPUT 1 -j {CHAIN}", "COMMIT"]
    return "\n".join(lines) + "\n"


def removal() -> str:
    """iptables-restore --noflush text removing everything ruleset() installed."""
    return "\n".join(["*filter", f"-D INPUT -j {CHAIN}", f"-F {CHAIN}", f"-X {CHAIN}", "COMMIT"]) + "\n"
