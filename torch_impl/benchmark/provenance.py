"""Where and on what code a figure was measured: the machine, and the code's fingerprint.

Every section file the benchmark writes records ``code``: the git commit (and whether the tree, and the
measured sources, differed from it) and ``sources_sha256``, a hash of the sources the measurement depends on
(``MEASURED``: the attention modules, the networks and the benchmark's measuring code). The
hash changes whenever one of them does, so ``matches_current(section)`` says whether a committed figure
measured the code checked out here, and ``label(section)`` says so in the speed table ("current code" or
"older code (measured YYYY-MM-DD)").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parents[1]  # torch_impl/
ROOT = PACKAGE.parent
# The sources a measurement depends on (globs under the repository root); the report, which only reads
# section files, is not among them.
MEASURED = ("torch_impl/attention/**/*.py", "torch_impl/models/**/*.py",
            "torch_impl/benchmark/**/*.py")
NOT_MEASURED = ("torch_impl/benchmark/report.py",)


def measured_files(root: Path = ROOT) -> list[Path]:
    files = {p for pattern in MEASURED for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in files if p.relative_to(root).as_posix() not in NOT_MEASURED)


def sources_sha256(root: Path = ROOT) -> str:
    """sha256 (16 hex digits) over the measured sources' paths and bytes, in path order."""
    h = hashlib.sha256()
    for path in measured_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _git(*args: str, root: Path = ROOT) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def code_fingerprint(root: Path = ROOT) -> dict:
    """The measured code: ``commit`` (``GIT_COMMIT`` where the tree has no .git, as on a lent GPU machine),
    ``dirty`` (the tree differs from it; None where unknown), ``measured_sources_dirty`` and ``sources_sha256``."""
    commit = _git("rev-parse", "--short=12", "HEAD", root=root)
    out = {"commit": commit.strip() if commit else os.environ.get("GIT_COMMIT"), "dirty": None,
           "measured_sources_dirty": None, "sources_sha256": sources_sha256(root), "sources": list(MEASURED)}
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no", root=root)
        measured = _git("status", "--porcelain", "--", *(f":(glob){p}" for p in MEASURED), root=root)
        out["dirty"] = None if status is None else bool(status.strip())
        out["measured_sources_dirty"] = None if measured is None else bool(measured.strip())
    return out


def measured_fingerprint(section: dict) -> str | None:
    """The sources hash a section file records (None for files written before it was recorded)."""
    return (section.get("code") or {}).get("sources_sha256")


def matches_current(section: dict, root: Path = ROOT) -> bool:
    """Whether a section file (a committed JSON, as a dict) measured the sources checked out here."""
    measured = measured_fingerprint(section)
    return measured is not None and measured == sources_sha256(root)


def measured_date(section: dict) -> str:
    """YYYY-MM-DD of the measurement ('unknown date' where the file records none)."""
    date = section.get("machine", {}).get("date")
    return date[:10] if isinstance(date, str) and len(date) >= 10 else "unknown date"


def label(section: dict, root: Path = ROOT) -> str:
    """'current code', or 'older code (measured YYYY-MM-DD)'."""
    return "current code" if matches_current(section, root) else f"older code (measured {measured_date(section)})"


def freshness(section: dict, root: Path = ROOT) -> str:
    """'' when the section measured this code, else why its figures may not hold any more."""
    if matches_current(section, root):
        return ""
    measured = measured_fingerprint(section) or section.get("machine", {}).get("code_id")
    if measured is None:
        return "stale: measured before the code fingerprint was recorded"
    return f"stale: measured on code {measured[:12]}, the checkout is {sources_sha256(root)[:12]}"


def machine(device: str) -> dict:
    """The machine, the versions, the date (UTC)."""
    import torchvision

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
