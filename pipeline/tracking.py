"""The one module that talks to MLflow.

One parent run per pipeline invocation, a nested run per stage. Params are the
flattened resolved config (secret-looking keys redacted); metrics and params are sent
in batches. With ``tracking.enabled=false`` every call is a no-op, so stage code never
needs to ask.
"""

from __future__ import annotations

import contextlib
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

_SECRET = re.compile(r"(password|passwd|secret|token|api[_-]?key|access[_-]?key|credential)", re.I)
_MAX_BATCH = 100


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


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    """Replace values whose key looks like a secret, and credentials inside URIs."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        leaf = k.rsplit(".", 1)[-1]
        if _SECRET.search(leaf):
            out[k] = "***"
        elif isinstance(v, str) and "://" in v and "@" in v:
            out[k] = re.sub(r"//[^/@]*@", "//***@", v)
        else:
            out[k] = v
    return out


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
            f"MLflow tracking server {uri} is unreachable ({exc}); start it with `make mlflow-server` "
            "or run with tracking=local; local outputs were left untouched"
        ) from exc


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
        self.uri = uri
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
        import mlflow
        from mlflow.tracking import MlflowClient

        _server_reachable(self.uri, self.timeout_s)
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(self.timeout_s)))
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        exp = self._client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                location = (
                    Path(self.artifact_root).resolve().as_uri()
                    if "://" not in self.artifact_root
                    else self.artifact_root
                )
                self._experiment_id = self._client.create_experiment(
                    self.experiment, artifact_location=location
                )
            except Exception:  # another process created it first
                exp = self._client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                self._experiment_id = exp.experiment_id
        else:
            self._experiment_id = exp.experiment_id

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
        all_tags = {"mlflow.runName": name, **(tags or {})}
        if self._run_stack:
            all_tags["mlflow.parentRunId"] = self._run_stack[-1]
        r = _retry(
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
                _retry(lambda: self._client.set_terminated(run_id, status=status))

    # ------------------------------------------------------------------ logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in redact(params).items()]
        for i in range(0, len(items), _MAX_BATCH):
            batch = items[i : i + _MAX_BATCH]
            _retry(lambda b=batch: self._client.log_batch(self.run_id, params=b))

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
            _retry(lambda b=batch: self._client.log_batch(self.run_id, metrics=b))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        _retry(lambda: self._client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        p = Path(path)
        if p.is_dir():
            self._client.log_artifacts(self.run_id, str(p), artifact_path)
        elif p.exists():
            self._client.log_artifact(self.run_id, str(p), artifact_path)

    def log_lightgbm_model(
        self, booster: Any, input_example: Any, registered_name: str | None
    ) -> str | None:
        """Log a LightGBM booster (its own text format) with signature and example; register it."""
        if not self.enabled or self.run_id is None:
            return None
        import mlflow
        import mlflow.lightgbm
        from mlflow.models import infer_signature

        preds = booster.predict(input_example)
        signature = infer_signature(input_example, preds)
        # mlflow's fluent API needs an active run: attach to ours for the duration
        with mlflow.start_run(run_id=self.run_id, nested=True):
            info = mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=signature,
                input_example=input_example,
                registered_model_name=registered_name or None,
            )
        return str(info.model_uri)


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
    )
