"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import pathlib
import platform

import jax


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(packages: tuple[str, ...] = ("jax", "jaxlib")) -> dict:
    """Processor, cores, platform, JAX device, versions of ``packages``, UTC date."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"processor": cpu_model(), "cpu_count": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "device": str(jax.devices()[0]),
            "device_kind": jax.devices()[0].device_kind, "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
