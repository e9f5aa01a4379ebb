"""What a benchmark ran on, printed at its top: ratios move between machines of one class.

The CPU model, the SIMD extensions that decide which kernels can pay (AVX-512 and its VNNI
and bf16 instructions, AMX; a machine with AVX2 only runs bf16 and int8 matmuls no faster
than f32), the cores, the load average, and JAX's version, backend and XLA flags.
"""

from __future__ import annotations

import os
import platform

FLAGS = ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu() -> tuple[str, set[str]]:
    """(model name, the set of /proc/cpuinfo flags) of this machine's first CPU."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return model, flags


def describe() -> str:
    """One line: CPU model, which of `FLAGS` it has, cores, load, JAX backend and XLA flags."""
    import jax

    model, flags = cpu()
    have = " ".join(f for f in FLAGS if f in flags) or "none of " + " ".join(FLAGS)
    backend = jax.devices()[0]
    return (
        f"cpu: {model}, {os.cpu_count()} cores, flags: {have}; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; jax {jax.__version__} on "
        f"{backend.platform} ({backend.device_kind}, {jax.device_count()} devices); "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
