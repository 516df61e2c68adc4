"""Shared test helpers: the repository root, the shared data folder, running Snakemake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ENMAP_DIR = SHARED / "data" / "enmap-potsdam"



def tool_env() -> dict[str, str]:
    """Environment with this interpreter's bin folder first and DVC analytics off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def run_snakemake(workdir: Path, *args: str, check: bool = True,
                  timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``workdir`` as working directory."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *args]
    proc = subprocess.run(cmd, cwd=workdir, env=tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc
