"""Boot options a kernel acts on only when it was built with their code.

Debian's cloud kernels have no page poisoning, KFENCE, KASAN, debug page
allocation, page table check or kmemleak: passing them `page_poison=1`
would only claim a check that never happens. So each such option goes to a
kernel whose config has it, and is left out, saying so, everywhere else.
"""

from __future__ import annotations

import re

# option name (before any '=') -> the config symbol its code needs
NEEDS: dict[str, str] = {
    "page_poison": "PAGE_POISONING",
    "slub_debug": "SLUB_DEBUG",
    "kfence.sample_interval": "KFENCE",
    "kasan": "KASAN",
    "kasan.fault": "KASAN",
    "kasan_multi_shot": "KASAN",
    "debug_pagealloc": "DEBUG_PAGEALLOC",
    "page_table_check": "PAGE_TABLE_CHECK",
    "kmemleak": "DEBUG_KMEMLEAK",
}


def usable(args: list[str], config: str) -> tuple[list[str], list[str]]:
    """(the options of `args` the kernel of `config` acts on, those it would ignore)."""
    have = set(re.findall(r"^CONFIG_(\w+)=[ym]$", config, re.M))
    kept: list[str] = []
    dropped: list[str] = []
    for arg in args:
        need = NEEDS.get(arg.split("=", 1)[0])
        (kept if need is None or need in have else dropped).append(arg)
    return kept, dropped


def why_dropped(dropped: list[str]) -> str:
    return ", ".join(f"{a} (no CONFIG_{NEEDS[a.split('=', 1)[0]]})" for a in dropped)
