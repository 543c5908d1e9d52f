"""The one module that talks to MLflow.

One parent run per pipeline invocation, a nested run per stage. Params are the
flattened resolved config (secret-looking keys redacted); metrics and params are sent
in batches. With ``tracking.enabled=false`` every call is a no-op, so stage code never
needs to ask.

Faults: an unreachable or hung tracking server fails the run within seconds with a
:class:`TrackingError` (no minutes of HTTP retries), before any local output is touched
when it happens at the start. Secret-looking keys, credentials in URIs and secret
``key=value`` overrides in tags are redacted before anything is sent. Several processes
may share one SQLite store (parallel sweep jobs): its creation is serialised and lock
contention is retried.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# a key is secret-looking when it contains one of these words...
_SECRET_WORDS = re.compile(
    r"(password|passwd|passphrase|secret|token|credential|apikey|accesskey|privatekey)", re.I
)
# ...or has one of these as a whole part (api_key, db.key, basic-auth; not monkey, author)
_SECRET_PARTS = frozenset({"key", "pwd", "auth", "pass"})
# user:password@ (or token@) inside any URI-looking text
_URI_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@:\s]*)(:[^/@\s]*)?@"
)
# key=value pairs inside free text (CLI overrides in tags)
_SECRET_ASSIGNMENT = re.compile(r"(?P<key>[\w.\-]+)=(?P<value>\S+)")
_MAX_BATCH = 100
# HTTP behaviour of the MLflow client: a dead or hung server must fail a run within
# seconds, not after MLflow's default of minutes of retries. Values the user set in the
# environment win.
_HTTP_ENV = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)
_USER_HTTP_ENV = frozenset(k for k in _HTTP_ENV if k in os.environ)


class TrackingError(RuntimeError):
    """The tracking backend cannot be reached or refused a write."""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) config key names a secret: password, token, key, credentials..."""
    leaf = str(key).rsplit(".", 1)[-1]
    if _SECRET_WORDS.search(leaf.replace("_", "").replace("-", "")):
        return True
    parts = re.split(r"[_\-]|(?<=[a-z])(?=[A-Z])", leaf)
    return any(part.lower() in _SECRET_PARTS for part in parts)


def redact_uri(text: str) -> str:
    """Hide the password (or token) in ``scheme://user:password@host`` forms."""

    def _sub(m: re.Match[str]) -> str:
        user = m.group("user")
        if m.group(3) is None:  # scheme://token@host: the user part itself is the secret
            return f"{m.group('scheme')}***@"
        return f"{m.group('scheme')}{user}:***@"

    return _URI_CREDENTIALS.sub(_sub, text)


def redact_text(text: str) -> str:
    """Redact ``key=value`` pairs with secret-looking keys and credentials in URIs."""

    def _sub(m: re.Match[str]) -> str:
        if is_secret_key(m.group("key")):
            return f"{m.group('key')}=***"
        return m.group(0)

    return redact_uri(_SECRET_ASSIGNMENT.sub(_sub, text))


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """Replace values whose key looks like a secret, and credentials inside URIs."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if is_secret_key(k):
            out[k] = "***"
        elif isinstance(v, str):
            out[k] = redact_uri(v)
        else:
            out[k] = v
    return out


def redact_tree(tree: Any) -> Any:
    """:func:`redact` applied to a nested config (dicts and lists), keeping its shape."""
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            if isinstance(v, (Mapping, list)):
                out[k] = redact_tree(v)
            elif is_secret_key(str(k)):
                out[k] = "***"
            else:
                out[k] = redact_uri(v) if isinstance(v, str) else v
        return out
    if isinstance(tree, list):
        return [redact_tree(v) for v in tree]
    return redact_uri(tree) if isinstance(tree, str) else tree


def _server_reachable(uri: str, timeout: float) -> None:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise TrackingError(
            f"MLflow tracking server {redact_uri(uri)} is unreachable ({exc}); start it with "
            "`make mlflow-server` or run with tracking=local; local outputs were left untouched"
        ) from exc


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise creation of a SQLite store between processes (parallel sweep jobs).

    MLflow creates the tables of a new SQLite database on first use; two processes
    doing so at once collide. Other stores need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    # lock the database's folder (no lock file left beside the database)
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class Tracker:
    def __init__(
        self,
        uri: str,
        artifact_root: str,
        experiment: str,
        enabled: bool = True,
        timeout_s: float = 5.0,
    ):
        self.enabled = enabled
        self._uri = uri
        self.uri = redact_uri(uri)  # for display: summaries, messages
        self.artifact_root = artifact_root
        self.experiment = experiment
        self.timeout_s = timeout_s
        self._client: Any = None
        self._experiment_id: str | None = None
        self._run_stack: list[str] = []
        self.parent_run_id: str | None = None

    # ------------------------------------------------------------------ set-up
    def _connect(self) -> None:
        if self._client is not None:
            return
        _server_reachable(self._uri, self.timeout_s)
        http_env = {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(self.timeout_s))),
        }
        for k, v in http_env.items():
            if k not in _USER_HTTP_ENV:
                os.environ[k] = v
        try:
            with _store_lock(self._uri):
                self._open_store()
        except TrackingError:
            raise
        except Exception as exc:
            self._client = None
            raise TrackingError(
                f"could not open the MLflow tracking store {self.uri}: {_first_line(exc)}; "
                "check tracking.uri (or run with tracking=off); local outputs were left untouched"
            ) from exc

    def _open_store(self) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            # no artifact_root: the server decides (proxied artifacts of `mlflow server`)
            location = None
            if self.artifact_root:
                location = (
                    Path(self.artifact_root).resolve().as_uri()
                    if "://" not in self.artifact_root
                    else self.artifact_root
                )
            try:
                self._experiment_id = client.create_experiment(
                    self.experiment, artifact_location=location
                )
            except Exception:  # another process created it first
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                self._experiment_id = exp.experiment_id
        else:
            self._experiment_id = exp.experiment_id
        # the fluent API (model logging) uses the global URIs: set them once the store works
        mlflow.set_tracking_uri(self._uri)
        mlflow.set_registry_uri(self._uri)
        self._client = client

    @property
    def client(self) -> Any:
        self._connect()
        return self._client

    @property
    def run_id(self) -> str | None:
        return self._run_stack[-1] if self._run_stack else None

    # ------------------------------------------------------------------ runs
    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, str] | None = None) -> Iterator[str | None]:
        """A run nested under the current one (or a parent run when none is open)."""
        if not self.enabled:
            yield None
            return
        self._connect()
        all_tags = {"mlflow.runName": name, **_redact_tags(tags or {})}
        if self._run_stack:
            all_tags["mlflow.parentRunId"] = self._run_stack[-1]
        r = self._call(
            lambda: self._client.create_run(self._experiment_id, tags=all_tags, run_name=name)
        )
        run_id = r.info.run_id
        if not self._run_stack:
            self.parent_run_id = run_id
        self._run_stack.append(run_id)
        status = "FAILED"
        try:
            yield run_id
            status = "FINISHED"
        finally:
            self._run_stack.pop()
            with contextlib.suppress(Exception):
                _retry(lambda: self._client.set_terminated(run_id, status=status), attempts=3)

    # ------------------------------------------------------------------ logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in redact(params).items()]
        for i in range(0, len(items), _MAX_BATCH):
            batch = items[i : i + _MAX_BATCH]
            self._call(lambda b=batch: self._client.log_batch(self.run_id, params=b))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(_clean_key(k), float(v), now, step)
            for k, v in metrics.items()
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            batch = items[i : i + 1000]
            self._call(lambda b=batch: self._client.log_batch(self.run_id, metrics=b))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in _redact_tags(tags).items()]
        self._call(lambda: self._client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        p = Path(path)
        run_id = self.run_id
        if p.is_dir():
            self._call(lambda: self._client.log_artifacts(run_id, str(p), artifact_path))
        elif p.exists():
            self._call(lambda: self._client.log_artifact(run_id, str(p), artifact_path))

    def log_lightgbm_model(
        self, booster: Any, input_example: Any, registered_name: str | None
    ) -> str | None:
        """Log a LightGBM booster (its own text format) with signature and example; register it."""
        if not self.enabled or self.run_id is None:
            return None
        from importlib.metadata import version

        import mlflow
        import mlflow.lightgbm
        from mlflow.models import infer_signature

        preds = booster.predict(input_example)
        signature = infer_signature(input_example, preds)
        # pinned here rather than inferred: inference loads the model in a subprocess,
        # which is slow and depends on whatever else is installed
        requirements = [f"{pkg}=={version(pkg)}" for pkg in ("lightgbm", "numpy", "pandas")]

        # mlflow's fluent API needs an active run: attach to ours for the duration
        def _log() -> Any:
            with mlflow.start_run(run_id=self.run_id, nested=True):
                return mlflow.lightgbm.log_model(
                    booster,
                    name="model",
                    signature=signature,
                    input_example=input_example,
                    registered_model_name=registered_name or None,
                    pip_requirements=requirements,
                )

        info = self._call(_log, attempts=1)
        return str(info.model_uri)

    def _call(self, fn: Any, attempts: int = 8) -> Any:
        """Call the MLflow client; failures become :class:`TrackingError` naming the store."""
        try:
            return _retry(fn, attempts=attempts)
        except TrackingError:
            raise
        except Exception as exc:
            if not _is_tracking_failure(exc):
                raise
            raise TrackingError(
                f"MLflow tracking store {self.uri} failed: {_first_line(exc)}; outputs written "
                "so far are complete and were kept"
            ) from exc


def _is_tracking_failure(exc: BaseException) -> bool:
    """MLflow, HTTP and database errors (not bugs in the caller's code)."""
    mod = type(exc).__module__.split(".")[0]
    return mod in ("mlflow", "requests", "urllib3", "sqlalchemy", "sqlite3", "psycopg2") or (
        isinstance(exc, OSError)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact_uri(text.splitlines()[0])[:500]


def _redact_tags(tags: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: ("***" if is_secret_key(k) else redact_text(v) if isinstance(v, str) else v)
        for k, v in tags.items()
    }


def _clean_key(k: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", k)


def _retry(fn: Any, attempts: int = 8, delay: float = 0.25) -> Any:
    """Retry on SQLite lock contention, which several parallel jobs can hit."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            msg = str(exc).lower()
            if ("locked" in msg or "busy" in msg) and i < attempts - 1:
                time.sleep(delay * (2**i))
                continue
            raise


def from_config(tracking_cfg: Any) -> Tracker:
    return Tracker(
        uri=str(tracking_cfg.uri),
        artifact_root=str(tracking_cfg.artifact_root),
        experiment=str(tracking_cfg.experiment),
        enabled=bool(tracking_cfg.enabled),
        timeout_s=float(tracking_cfg.get("timeout_s", 5.0)),
    )
