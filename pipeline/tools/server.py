"""A local MLflow tracking server backed by PostgreSQL, for ``tracking=server``.

``python -m pipeline.tools.server`` (what ``make mlflow-server`` runs) creates a PostgreSQL
cluster in a project-local folder (``outputs/mlflow-server`` by default), starts it on
127.0.0.1, creates the ``mlflow`` database and serves MLflow on 127.0.0.1 in the
foreground; Ctrl-C (or SIGTERM) stops both. Artifacts are proxied by the server and
stored beside the database. Nothing listens on other interfaces.

PostgreSQL comes from the distribution's packages (``.ci/install-postgres``). The
server refuses to run as root, so when started by root the cluster is owned by, and
run as, the ``postgres`` user the package creates. The database password is random,
kept in a 0600 file next to the cluster and handed to MLflow through the environment,
never on a command line.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.base.config import REPO_ROOT
from pipeline.base.errors import PipelineError

HOST = "127.0.0.1"
DEFAULT_PORT = 5050
DEFAULT_PG_PORT = 5433
DB_NAME = "mlflow"
DB_USER = "mlflow"


class ServerError(PipelineError, RuntimeError):
    """PostgreSQL or the MLflow server could not be set up or started."""


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl live (Debian keeps them off PATH), newest version first."""
    for exe in ("pg_ctl", "initdb"):
        found = shutil.which(exe)
        if found:
            return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            if (Path(out) / "initdb").exists():
                return Path(out)

    def _version(p: str) -> float:
        with contextlib.suppress(ValueError):
            return float(Path(p).parents[1].name)
        return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version, reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _run_as() -> str | None:
    """The user PostgreSQL must run as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServerError(
            "running as root, but there is no 'postgres' user to run PostgreSQL as; "
            "install PostgreSQL with .ci/install-postgres"
        ) from exc
    return "postgres"


def _chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def _can_reach(path: Path, user: str | None) -> bool:
    if user is None:
        return True
    r = subprocess.run(["test", "-x", str(path)], user=user, capture_output=True)
    return r.returncode == 0


class ServerStack:
    """PostgreSQL plus an MLflow server using it, both on 127.0.0.1.

    ``with ServerStack(root) as uri:`` starts both and always stops both.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        port: int = DEFAULT_PORT,
        pg_port: int = DEFAULT_PG_PORT,
        workers: int = 1,
        quiet: bool = False,
    ):
        self.root = Path(root).resolve()
        self.port = int(port)
        self.pg_port = int(pg_port)
        self.workers = int(workers)
        self.quiet = quiet
        self.user = _run_as()
        bindir = postgres_bindir()
        if bindir is None:
            raise ServerError(
                "PostgreSQL is not installed (no initdb/pg_ctl found); install it from the "
                "distribution's packages: bash .ci/install-postgres"
            )
        self.bindir = bindir
        self.pg_dir = self.root / "postgres"
        self.pg_data = self.pg_dir / "data"
        self.pg_log = self.pg_dir / "postgres.log"
        self.password_file = self.root / "db.password"
        self.artifacts = self.root / "artifacts"
        self.server_log = self.root / "mlflow-server.log"
        self._mlflow: subprocess.Popen[bytes] | None = None
        self._pg_started = False

    # ------------------------------------------------------------------ helpers
    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def backend_uri(self) -> str:
        pw = self.password_file.read_text().strip()
        return f"postgresql+psycopg2://{DB_USER}:{pw}@{HOST}:{self.pg_port}/{DB_NAME}"

    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(f"mlflow-server: {msg}", flush=True)

    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            cwd="/",
        )
        if check and r.returncode != 0:
            log = self.pg_log.read_text()[-2000:] if self.pg_log.exists() else ""
            raise ServerError(
                f"{args[0]} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}\n{log}"
            )
        return r

    # ------------------------------------------------------------------ PostgreSQL
    def _init_cluster(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.pg_data / "PG_VERSION").exists():
            if not self.password_file.exists():
                raise ServerError(
                    f"{self.pg_data} exists but {self.password_file} is missing; "
                    f"remove {self.root} to start afresh"
                )
            return
        if self.user is not None:
            # the postgres user must be able to reach the cluster folder
            self.root.chmod(0o755)
            for parent in self.root.parents:
                if not _can_reach(parent, self.user):
                    raise ServerError(
                        f"user '{self.user}' cannot enter {parent}, so PostgreSQL cannot use "
                        f"{self.pg_data}; choose a folder it can reach with --dir"
                    )
        if self.pg_dir.exists():
            shutil.rmtree(self.pg_dir)  # a half-made cluster from an interrupted start
        self.pg_dir.mkdir(parents=True)
        self.pg_dir.chmod(0o700)
        password = secrets.token_urlsafe(24)
        pwfile = self.pg_dir / "initdb.pw"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self.user is not None:
            _chown_tree(self.pg_dir, self.user)
        self._say(f"creating a PostgreSQL cluster in {self.pg_data}")
        try:
            self._pg(
                "initdb",
                "-D",
                str(self.pg_data),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        # loopback only, sockets inside the cluster folder (not /var/run/postgresql)
        with open(self.pg_data / "postgresql.conf", "a") as fh:
            fh.write(
                "\n# closure-risk local tracking store\n"
                f"listen_addresses = '{HOST}'\n"
                f"unix_socket_directories = '{self.pg_dir}'\n"
            )
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)

    def _start_postgres(self) -> None:
        self._say(f"starting PostgreSQL on {HOST}:{self.pg_port}")
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pg_data),
            "-l",
            str(self.pg_log),
            "-o",
            f"-p {self.pg_port} -c listen_addresses={HOST}",
            "-w",
            "-t",
            "60",
            "start",
        )
        self._pg_started = True
        import psycopg2  # psycopg2: only the PostgreSQL-backed server needs it

        pw = self.password_file.read_text().strip()
        conn = psycopg2.connect(
            host=HOST, port=self.pg_port, user=DB_USER, password=pw, dbname="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            conn.close()

    def _stop_postgres(self) -> None:
        if not self._pg_started:
            return
        self._pg("pg_ctl", "-D", str(self.pg_data), "-m", "fast", "-w", "stop", check=False)
        self._pg_started = False

    # ------------------------------------------------------------------ MLflow
    def _start_mlflow(self, timeout_s: float = 120.0) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": self.backend_uri,  # kept off the command line
        }
        mlflow_exe = Path(sys.executable).with_name("mlflow")
        cmd = [
            str(mlflow_exe) if mlflow_exe.exists() else "mlflow",
            "server",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--artifacts-destination",
            str(self.artifacts),
        ]
        self._say(f"starting MLflow on {self.uri} (log: {self.server_log})")
        log = open(self.server_log, "ab")
        try:
            self._mlflow = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._mlflow.poll() is not None:
                raise ServerError(
                    f"the MLflow server exited with code {self._mlflow.returncode}:\n"
                    + self.server_log.read_text(errors="replace")[-3000:]
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.5)
        raise ServerError(f"the MLflow server did not answer on {self.uri} within {timeout_s:.0f}s")

    def _stop_mlflow(self) -> None:
        proc, self._mlflow = self._mlflow, None
        if proc is None or proc.poll() is not None:
            return
        # the server runs its workers in its own process group: stop them all, and kill
        # whatever of that group is left after a short grace period
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        try:
            self._init_cluster()
            self._start_postgres()
            self._start_mlflow()
        except BaseException:  # noqa: BLE001 - an interrupt too must stop what was started; re-raised
            self.stop()
            raise
        return self.uri

    def stop(self) -> None:
        try:
            self._stop_mlflow()
        finally:
            self._stop_postgres()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.tools.server",
        description="Serve MLflow on 127.0.0.1 with a PostgreSQL backend store (foreground).",
    )
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="MLflow port")
    ap.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT, help="PostgreSQL port")
    ap.add_argument(
        "--dir",
        default=str(REPO_ROOT / "outputs" / "mlflow-server"),
        help="folder for the PostgreSQL cluster, artifacts and logs",
    )
    ap.add_argument("--workers", type=int, default=1, help="MLflow server worker processes")
    args = ap.parse_args(argv)
    try:
        stack = ServerStack(args.dir, port=args.port, pg_port=args.pg_port, workers=args.workers)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stopping = False

    def _on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        stack.start()
        print(
            f"mlflow-server: ready at {stack.uri}; run the pipeline with tracking=server "
            f"(tracking.uri={stack.uri}); Ctrl-C stops the server and PostgreSQL",
            flush=True,
        )
        while not stopping:
            if stack._mlflow is not None and stack._mlflow.poll() is not None:
                print(
                    f"error: the MLflow server exited (code {stack._mlflow.returncode}); "
                    f"see {stack.server_log}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        print("mlflow-server: stopping", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
