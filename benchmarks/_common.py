"""Shared helpers for the benchmarks: machine description and result files."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def compile_package() -> None:
    """Byte-compile peakloc as an installed package is, so that every timed start reads its bytecode.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (some tool environments), a module changed since ``make install``
    would be compiled again on every start the benchmarks time (9 ms for ``run/locate.py``).
    """
    import compileall

    import peakloc

    compileall.compile_dir(str(Path(peakloc.__file__).parent), quiet=1)


def machine() -> dict:
    """What the figures were measured on."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        model = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        info["cpu"] = model[0] if model else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        import numpy

        info["numpy"] = numpy.__version__
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return info


def write(name: str, rows: list[dict], extra: dict | None = None) -> tuple[Path, Path]:
    """Write rows as ``results/NAME.csv`` and, with the machine, ``results/NAME.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = RESULTS / f"{name}.csv", RESULTS / f"{name}.json"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps({"machine": machine(), **(extra or {}), "rows": rows}, indent=1))
    return csv_path, json_path
