"""Finding the processes a test started, by a marker in their environment (their temp DAGSTER_HOME)."""

from pathlib import Path


def processes_with_env(marker: bytes) -> list[int]:
    """PIDs whose environment holds ``marker`` exactly (one ``NAME=value`` entry), in PID order."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return sorted(pids)
