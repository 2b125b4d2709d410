"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform

import jax


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
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


def main(parse_args, run, write, argv=None) -> dict:
    """A benchmark's entry point: parse, run, write JSON/.md/.png, print the table."""
    config, out = parse_args(argv)
    result = run(config)
    print(write(result, out))
    print(f"\nwrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return result


def write_outputs(result: dict, out: pathlib.Path, markdown, plot) -> str:
    """Writes ``out`` (JSON), ``markdown(result)`` to its ``.md`` sibling and
    ``plot(result, path)`` to its ``.png`` sibling; returns the Markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    out.with_suffix(".md").write_text(table + "\n")
    plot(result, out.with_suffix(".png"))
    return table
