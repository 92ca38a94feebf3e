"""The machine a benchmark ran on, in one line: figures from two CPUs are not comparable.

Two 2-core machines that both say "AMD EPYC" can differ by 3x in bfloat16 captioning: one
computes bf16 natively (AVX-512 BF16 or AMX), the other emulates it. So the line names the
vector extensions that decide it, beside the model name and the cores this process may use.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# The extensions that change which dtype and batch are fastest, as /proc/cpuinfo spells them.
_EXTENSIONS = [("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")]


def cpu_facts() -> dict:
    """Model name, the deciding vector extensions, logical CPUs and the ones usable here."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": name,
        "extensions": [label for flag, label in _EXTENSIONS if flag in flags],
        "native_bf16": bool(flags & {"amx_bf16", "avx512_bf16"}),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
    }


def cpu_line() -> str:
    """e.g. "CPU: AMD EPYC (AVX2; bf16 emulated), 2 of 2 cores usable"."""
    facts = cpu_facts()
    extensions = ", ".join(facts["extensions"]) or "no AVX2"
    bf16 = "bf16 native" if facts["native_bf16"] else "bf16 emulated"
    return f"CPU: {facts['cpu']} ({extensions}; {bf16}), {facts['usable_cpus']} of {facts['cpu_count']} cores usable"


def announce_cpu() -> None:
    """Print cpu_line() first in a benchmark's report (not into --json output, which is data)."""
    if "--json" not in sys.argv[1:]:
        print(cpu_line(), flush=True)


if __name__ == "__main__":
    print(cpu_line())
