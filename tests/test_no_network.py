"""The pipeline reaches no network at run time, the tracking library's telemetry included.

A run is started in a child process whose name lookups and connections to anything but
this machine are refused and recorded. The child's environment has none of the
variables under which MLflow turns its telemetry off by itself (CI, pytest), as on a
user's machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.base.config import REPO_ROOT

_GUARDED_CLI = r"""
import atexit, ipaddress, runpy, socket, sys
asked = []
LOCAL = {"localhost", "127.0.0.1", "::1", "", None}
_lookup, _connect = socket.getaddrinfo, socket.socket.connect
def lookup(host, *args, **kwargs):
    if host not in LOCAL:
        asked.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "no network in this test")
    return _lookup(host, *args, **kwargs)
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        if not ipaddress.ip_address(address[0]).is_loopback:
            asked.append(str(address[0]))
            raise OSError("no network in this test")
    return _connect(self, address)
socket.getaddrinfo, socket.socket.connect = lookup, connect
atexit.register(lambda: print("asked:", sorted(set(asked)), file=sys.stderr))
sys.argv = ["pipeline", *sys.argv[1:]]
runpy.run_module("pipeline", run_name="__main__")
"""
#: the variables under which MLflow turns its telemetry off by itself
_QUIETING = ("CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY")


def _guarded_run(root: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in _QUIETING}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _GUARDED_CLI,
            "generate",
            "data.n_borrowers=300",
            "simulator.oracle_rows=50",
            "simulator.oracle_futures=2",
            f"paths.root={root}",
        ],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLflow run: tracking off" not in proc.stdout  # the run was tracked
    return next(ln for ln in proc.stderr.splitlines() if ln.startswith("asked:"))


@pytest.mark.slow
def test_a_tracked_run_asks_for_no_host(tmp_path: Path) -> None:
    assert _guarded_run(tmp_path / "quiet") == "asked: []"
    # the guard does see MLflow's telemetry when a user turns it on
    loud = _guarded_run(tmp_path / "loud", MLFLOW_DISABLE_TELEMETRY="false")
    assert loud != "asked: []", loud
