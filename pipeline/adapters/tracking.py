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

What a run says about itself: the experiment declares itself as model training (so the
MLflow UI opens on its runs) and carries a saved view of the runs table with the headline
figures as columns (:func:`ui_url` links to it); a parent run has a readable name
(:func:`run_name`), its headline figures under short metric names (:data:`HEADLINES`) and
in its description; the data a run saw is logged as dataset inputs
(:meth:`Tracker.log_dataset`); registered model versions carry the headline figures as tags
(:func:`tag_model_version`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.lightgbm
import pyarrow.parquet as pq
import yaml
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.base.config import Config, TrackingConfig
from pipeline.base.errors import PipelineError
from pipeline.base.io import resolve, staged_tree
from pipeline.base.redact import is_secret_key, redact_text, redact_uri
from pipeline.base.ui import VIEW_KEY, ui_url

log = logging.getLogger(__name__)

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


class TrackingError(PipelineError, RuntimeError):
    """The tracking backend cannot be reached or refused a write."""


# --------------------------------------------------------------------------- what a run is

#: experiment tag MLflow 3 reads to open an experiment on its training runs
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: run tag shown as the run's description
NOTE_TAG = "mlflow.note.content"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: the headline policy figures are read at this closing threshold (the top score tier's cut)
POLICY_THRESHOLD = 0.15


@dataclass(frozen=True)
class Headline:
    """A figure a modeller compares first: logged by ``stage`` as ``metric``, shown as ``short``."""

    short: str
    stage: str
    metric: str
    label: str
    fmt: str
    digits: int  # the short-name copy is rounded to this many decimals, to read in a table


#: The one table of headline figures: short name, the stage run that logs it and under
#: which metric name, how the description labels and formats it.
HEADLINES: tuple[Headline, ...] = (
    Headline("oot_auc", "train", "oot.auc", "out-of-time AUC", "{:.4f}", 4),
    Headline("oot_ks", "train", "oot.ks", "out-of-time KS", "{:.4f}", 4),
    Headline("oracle_gap", "train", "oracle_gap", "AUC gap to the trait oracle", "{:.4f}", 4),
    Headline(
        "oracle_gap_full",
        "train",
        "oracle_gap_full",
        "AUC gap to the full-state oracle",
        "{:.4f}",
        4,
    ),
    Headline(
        "fidelity_top1",
        "explain",
        "fidelity_top1",
        "explanation fidelity, top-1, on the closures with oracle futures",
        "{:.1%}",
        4,
    ),
    Headline(
        "policy_matched_loss",
        "policy",
        f"close.t{POLICY_THRESHOLD:g}.loss",
        f"policy loss, closing above {POLICY_THRESHOLD:g} (the matched loss)",
        "{:,.0f}",
        0,
    ),
    Headline(
        "policy_good_hit_saved",
        "policy",
        f"matched.t{POLICY_THRESHOLD:g}.good_hit_saved",
        "good customers hit, closing minus tiered, at that loss",
        "{:,.0f}",
        0,
    ),
)

#: short names of config keys in run names (others use their last part)
_SHORT_KEYS = {
    "data.n_borrowers": "n",
    "data.n_months": "months",
    "data.path": "table",
    "simulator.chunk_size": "chunk",
    "model.num_leaves": "leaves",
    "model.learning_rate": "lr",
    "model.n_estimators": "trees",
    "model.min_child_samples": "min_child",
    "model.feature_fraction": "feature_frac",
    "model.bagging_fraction": "bagging_frac",
    "model.early_stopping_rounds": "early_stop",
    "model.calibration": "calib",
    "simulator.tightening_month": "tighten_month",
    "simulator.tightening_strength": "tighten",
}
#: keys that change where or how fast a run works, not what it computes: left out of names
_UNNAMED_PREFIXES = ("paths.", "tracking.", "engine.", "hydra.", "bench.", "hydra/")
_UNNAMED_KEYS = frozenset(
    {
        "force",
        "stage",
        "tracking",
        "paths",
        "engine",
        "data.block_size",
        "data.n_jobs",
        "model.num_threads",
        "explain.n_jobs",
        "explain.plot_sample",
    }
)


def abbreviate(value: Any) -> str:
    """A short text for a value in a run name: 50000 -> 50k, 1000000 -> 1M, 0.050 -> 0.05."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        for size, suffix in ((1_000_000, "M"), (1_000, "k")):
            if abs(value) >= size and value % (size // 10) == 0:
                return f"{value / size:g}{suffix}"
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(abbreviate(v) for v in value)
    return str(value)


@functools.cache
def _schema_defaults() -> Any:
    return OmegaConf.structured(Config)


def _default_of(key: str) -> Any:
    """The schema default of a dotted config key; ``...`` when the schema has none."""
    node = _schema_defaults()
    try:
        value = OmegaConf.select(node, key, default=..., throw_on_missing=False)
    except (OmegaConfBaseException, ValueError, TypeError):  # interpolation or type errors
        return ...  # no default: the override counts as a change
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=False)
    return value


def _override_value(key: str, text: str, cfg: DictConfig | None) -> Any:
    """The value an override gave ``key``: from the composed config when there is one."""
    if cfg is not None:
        value = OmegaConf.select(cfg, key, default=..., throw_on_missing=False)
        if value is not ...:
            return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    try:  # YAML scalars, as Hydra reads them: 50000 -> int, 0.1 -> float, true -> bool
        parsed: Any = OmegaConf.to_container(OmegaConf.create(f"v: {text}"))
        return parsed["v"]
    except (yaml.YAMLError, OmegaConfBaseException, ValueError, TypeError):  # not a scalar
        return text.strip("'\"")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return not isinstance(a, bool) and not isinstance(b, bool) and float(a) == float(b)
    return bool(a == b)


def run_name(
    command: str, overrides: Sequence[str] | None = None, cfg: DictConfig | None = None
) -> str:
    """A run name a person can read: the command plus the overrides that change the run.

    ``run`` with ``data.n_borrowers=50000 model.num_leaves=63 data.seed=7`` is named
    ``run n=50k leaves=63 seed=7``; overrides equal to the schema default, and keys that
    only say where or how fast to work (paths, tracking, engine, threads), are left out.
    ``cfg``, the composed config, gives the values as the run used them.
    """
    parts = [command]
    for raw in overrides or []:
        text = raw.strip()
        if not text or text.startswith("~") or "=" not in text:
            continue
        key, value_text = text.lstrip("+").split("=", 1)
        if key in _UNNAMED_KEYS or key.startswith(_UNNAMED_PREFIXES) or is_secret_key(key):
            continue
        if "." not in key:  # a config group choice: experiment=tightening, data=table
            parts.append(value_text if key == "experiment" else f"{key}={value_text}")
            continue
        value = _override_value(key, value_text, cfg)
        if _same(value, _default_of(key)):
            continue
        short = _SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])
        shown = Path(value).name if key == "data.path" and isinstance(value, str) else value
        parts.append(f"{short}={abbreviate(shown)}")
    return redact_text(" ".join(parts))


def headline_note(name: str, figures: Mapping[str, float], datasets: Sequence[str] = ()) -> str:
    """The description of a parent run (Markdown): its name, headline figures and data."""
    lines = [f"**{name}**", ""]
    shown = [h for h in HEADLINES if h.short in figures]
    if shown:
        lines += ["| figure | metric | value |", "|---|---|---|"]
        lines += [f"| {h.label} | `{h.short}` | {h.fmt.format(figures[h.short])} |" for h in shown]
    else:
        lines.append("No headline figures (no train, explain or policy stage in this run).")
    if datasets:
        lines += ["", "Data: " + "; ".join(datasets)]
    return "\n".join(lines)


def runs_view() -> dict[str, Any]:
    """The saved runs-table view: after the run name, the headline figures, data and models.

    MLflow's shared view state (columns shown, their order and widths); the run name
    column is widened so that readable names are not cut.
    """
    metrics = [f"metrics.`{h.short}`" for h in HEADLINES]
    name, created = "attributes.`Run Name`", "runDateAndNestInfo"
    rest = ["attributes.`Dataset`", "attributes.`Models`"]
    return {
        "selectedColumns": [*metrics, *rest],
        "columnOrder": [name, created, *metrics, *rest],
        "columnWidths": {
            name: 340,
            "attributes.`Dataset`": 340,
            **{f"metrics.`{h.short}`": max(90, 8 * len(h.short) + 24) for h in HEADLINES},
        },
    }


def short_digest(text_or_digests: str | Mapping[str, str]) -> str:
    """A 12-character digest of a file digest, or of a name -> digest map (order-free)."""
    if isinstance(text_or_digests, str):
        text = text_or_digests
    else:
        text = json.dumps(dict(sorted(text_or_digests.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def manifest_digest(path: str | os.PathLike[str], names: Sequence[str] | None = None) -> str:
    """:func:`short_digest` of the output digests a stage manifest records (all, or ``names``).

    Reads only the small manifest JSON, never the data it describes.
    """
    try:
        outputs = json.loads(resolve(path).read_text())["outputs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrackingError(f"{path}: not a stage manifest with an 'outputs' map ({exc})") from exc
    if names is not None:
        missing = [n for n in names if n not in outputs]
        if missing:
            raise TrackingError(f"{path}: manifest has no output {missing[0]!r}")
        outputs = {n: outputs[n] for n in names}
    return short_digest(outputs)


# MLflow column types, from Arrow and pandas type names
_MLFLOW_TYPES = (
    ("bool", "boolean"),
    ("int64", "long"),
    ("uint64", "long"),
    ("uint32", "long"),
    ("int", "integer"),
    ("uint", "integer"),
    ("double", "double"),
    ("float64", "double"),
    ("float", "float"),
    ("timestamp", "datetime"),
    ("datetime", "datetime"),
    ("date", "datetime"),
    ("binary", "binary"),
)


def mlflow_type(type_name: str) -> str:
    """MLflow's column type for an Arrow or pandas type name (``int64`` -> ``long``)."""
    t = str(type_name).lower()
    if t.startswith("dictionary<"):  # a dictionary column has its values' type
        t = t[len("dictionary<values=") :].split(",", 1)[0]
    for prefix, kind in _MLFLOW_TYPES:
        if t.startswith(prefix):
            return kind
    return "string"


def _schema_json(columns: Mapping[str, str]) -> str:
    spec = [{"name": str(n), "type": mlflow_type(t), "required": True} for n, t in columns.items()]
    return json.dumps({"mlflow_colspec": spec})


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def flatten_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of :func:`flatten` (booleans and text left out), as floats: metrics."""
    return {
        k: float(v)
        for k, v in flatten(d, prefix).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


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
        self._stage_stack: list[str | None] = []
        self.parent_run_id: str | None = None
        #: headline figures of the current parent run (short name -> value)
        self.figures: dict[str, float] = {}
        self._datasets: dict[str, str] = {}  # dataset name -> digest, for the description
        self._model_runs: list[str] = []  # runs that logged (and may have registered) a model

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
        except Exception as exc:  # noqa: BLE001 - a store fails in many ways; re-raised, named
            self._client = None
            raise TrackingError(
                f"could not open the MLflow tracking store {self.uri}: {_first_line(exc)}; "
                "check tracking.uri (or run with tracking=off); local outputs were left untouched"
            ) from exc

    def _open_store(self) -> None:

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
            except MlflowException:  # another process created it first
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                self._experiment_id = exp.experiment_id
        else:
            self._experiment_id = exp.experiment_id
        self._tag_experiment(client, exp)
        # the fluent API (model logging) uses the global URIs: set them once the store works
        mlflow.set_tracking_uri(self._uri)
        mlflow.set_registry_uri(self._uri)
        self._client = client

    def _tag_experiment(self, client: Any, exp: Any) -> None:
        """Declare the experiment as model training and save the headline runs view.

        The kind is set only when missing (a user's choice stays); the view is ours and
        is kept up to date.
        """
        tags = dict(exp.tags) if exp is not None else {}
        view = json.dumps(runs_view())
        wanted = {VIEW_TAG: view}
        if EXPERIMENT_KIND_TAG not in tags:
            wanted[EXPERIMENT_KIND_TAG] = EXPERIMENT_KIND
        for key, value in wanted.items():
            if tags.get(key) != value:
                _retry(lambda k=key, v=value: client.set_experiment_tag(self._experiment_id, k, v))

    def ui_url(self, base: str) -> str:
        """The UI page of this tracker's experiment, in the headline view (see :func:`ui_url`)."""
        self._connect()
        return ui_url(base, str(self._experiment_id))

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
        parent = not self._run_stack
        if parent:
            self.parent_run_id = run_id
            self.figures, self._datasets, self._model_runs = {}, {}, []
        self._run_stack.append(run_id)
        self._stage_stack.append(str(tags["stage"]) if tags and "stage" in tags else None)
        status = "FAILED"
        try:
            yield run_id
            status = "FINISHED"
        finally:
            self._run_stack.pop()
            self._stage_stack.pop()
            if parent:
                self._close_parent(run_id, all_tags["mlflow.runName"])
            try:
                _retry(lambda: self._client.set_terminated(run_id, status=status), attempts=3)
            except (MlflowException, OSError) as exc:  # the store may be what failed
                print(
                    f"tracking: run {run_id} could not be marked {status} ({exc}); the next "
                    "invocation marks it FAILED",
                    file=sys.stderr,
                )

    def _close_parent(self, run_id: str, name: str) -> None:
        """Describe the parent run and tag the model versions it registered (best effort)."""
        try:
            datasets = [f"{n} (`{d}`)" for n, d in self._datasets.items()]
            note = headline_note(name, self.figures, datasets)
            _retry(lambda: self._client.set_tag(run_id, NOTE_TAG, note[:5000]))
            if not self.figures:
                return
            for model_run in self._model_runs:
                versions = _retry(
                    lambda m=model_run: self._client.search_model_versions(f"run_id = '{m}'")
                )
                for v in versions:
                    tag_model_version(self._client, v.name, v.version, self.figures, name)
        except Exception as exc:  # noqa: BLE001 - the results are logged, only the note is lost; warned
            log.warning("could not describe MLflow run %s: %s", run_id, _first_line(exc))

    # ------------------------------------------------------------------ logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None:
            return

        items = [Param(k, str(v)[:6000]) for k, v in redact(params).items()]
        for i in range(0, len(items), _MAX_BATCH):
            batch = items[i : i + _MAX_BATCH]
            self._call(lambda b=batch: self._client.log_batch(self.run_id, params=b))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled or self.run_id is None:
            return

        now = int(time.time() * 1000)
        items = [
            Metric(_clean_key(k), float(v), now, step)
            for k, v in metrics.items()
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            batch = items[i : i + 1000]
            self._call(lambda b=batch: self._client.log_batch(self.run_id, metrics=b))
        self._log_headlines({m.key: m.value for m in items}, now, step)

    def _log_headlines(self, logged: Mapping[str, float], now: int, step: int) -> None:
        """Headline figures a stage run just logged, under their short names on the parent."""

        stage = self._stage_stack[-1] if self._stage_stack else None
        found = {
            h.short: round(logged[h.metric], h.digits)
            for h in HEADLINES
            if stage == h.stage and h.metric in logged
        }
        if not found or self.parent_run_id is None:
            return
        self.figures.update(found)
        items = [Metric(k, v, now, step) for k, v in found.items()]
        parent = self.parent_run_id
        self._call(lambda: self._client.log_batch(parent, metrics=items))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None:
            return

        items = [RunTag(k, str(v)[:5000]) for k, v in _redact_tags(tags).items()]
        self._call(lambda: self._client.log_batch(self.run_id, tags=items))

    def log_dataset(
        self,
        name: str,
        digest: str,
        source: str | os.PathLike[str],
        *,
        schema: Mapping[str, str] | None = None,
        profile: Mapping[str, Any] | None = None,
        context: str = "training",
    ) -> None:
        """Log a dataset the current run used, as an MLflow run input (also on the parent run).

        ``digest`` identifies the data (:func:`short_digest`, :func:`manifest_digest`):
        two runs on the same data show the same digest. ``source`` is the file or folder
        it lives in; ``schema`` maps columns to Arrow or pandas type names; ``profile``
        holds what else is known (seed, size, rows per split). Nothing is read here.
        """
        if not self.enabled or self.run_id is None:
            return

        if not digest or len(digest) > 36:
            raise ValueError(
                f"dataset {name!r}: digest must have 1 to 36 characters, got {digest!r}"
            )
        text = str(source)
        uri = text if "://" in text else Path(text).expanduser().resolve().as_uri()
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="local" if uri.startswith("file:") else "external",
            source=json.dumps({"uri": redact_uri(uri)}),
            schema=_schema_json(schema) if schema else None,
            profile=json.dumps(dict(profile), default=str) if profile else None,
        )
        inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        for run_id in dict.fromkeys((self.run_id, self.parent_run_id)):
            if run_id is not None:
                self._call(lambda r=run_id: self._client.log_inputs(r, datasets=inputs))
        self._datasets[name] = digest

    def log_world(
        self, manifest: str | os.PathLike[str], seed: int, n_borrowers: int, n_months: int
    ) -> None:
        """The simulated world a run used: its folder, seed and size, digest of its files.

        ``manifest`` is the generate stage's manifest in the raw folder; the digest is
        that of the files it records, so two runs on the same world show the same one.
        """
        if not self.enabled or self.run_id is None:
            return
        folder = Path(manifest).parent
        self.log_dataset(
            f"world seed={seed} n={abbreviate(int(n_borrowers))} months={n_months}",
            manifest_digest(manifest),
            folder,
            profile={"seed": seed, "n_borrowers": n_borrowers, "n_months": n_months},
            context="source",
        )

    def log_feature_table(
        self,
        path: str | os.PathLike[str],
        manifest: str | os.PathLike[str],
        rows_per_split: Mapping[str, int] | None = None,
    ) -> None:
        """The feature table a run used: digest from the features manifest, schema and
        row count from the Parquet footer (no rows are read), rows per split when known."""
        if not self.enabled or self.run_id is None:
            return
        p = Path(path)
        meta = pq.ParquetFile(resolve(p)).metadata
        schema = meta.schema.to_arrow_schema()
        profile: dict[str, Any] = {"rows": meta.num_rows, "columns": len(schema)}
        if rows_per_split:
            profile["rows_per_split"] = {k: int(v) for k, v in rows_per_split.items()}
        self.log_dataset(
            p.stem,
            manifest_digest(manifest, [p.name]),
            p,
            schema={f.name: str(f.type) for f in schema},
            profile=profile,
        )

    def log_table(
        self,
        path: str | os.PathLike[str],
        digest: str,
        columns: Mapping[str, Any],
        rows: int,
        rows_per_split: Mapping[str, int] | None = None,
    ) -> None:
        """A user's own table (table mode): its path, digest (:func:`short_digest` of its
        file digest), column types (pandas dtypes or Arrow types) and size."""
        if not self.enabled or self.run_id is None:
            return
        profile: dict[str, Any] = {"rows": int(rows), "columns": len(columns)}
        if rows_per_split:
            profile["rows_per_split"] = {k: int(v) for k, v in rows_per_split.items()}
        self.log_dataset(
            Path(path).name,
            short_digest(digest) if len(digest) > 36 else digest,
            path,
            schema={str(k): str(v) for k, v in columns.items()},
            profile=profile,
        )

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        # a file the running stage wrote is logged from its staged copy (same name, same
        # bytes); a folder, file by file as the stage sees it
        p = resolve(path)
        run_id = self.run_id
        if p.is_dir():
            for rel, src in staged_tree(path).items():
                parts = [x for x in (artifact_path, rel.parent.as_posix()) if x and x != "."]
                folder = "/".join(parts) or None
                self._call(lambda s=src, f=folder: self._client.log_artifact(run_id, str(s), f))
        elif p.exists():
            self._call(lambda: self._client.log_artifact(run_id, str(p), artifact_path))

    def log_lightgbm_model(
        self, booster: Any, input_example: Any, registered_name: str | None
    ) -> str | None:
        """Log a LightGBM booster (its own text format) with signature and example; register it."""
        if not self.enabled or self.run_id is None:
            return None

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
        self._model_runs.append(str(self.run_id))
        self.link_model_to_parent(getattr(info, "model_id", None))
        return str(info.model_uri)

    def link_model_to_parent(self, model_id: str | None) -> None:
        """Name a model logged on a stage's run as an output of the invocation's parent
        run too, so the run the UI opens lists it under its logged models."""
        parent = self.parent_run_id
        if not self.enabled or not model_id or parent is None or parent == self.run_id:
            return
        from mlflow.entities import LoggedModelOutput

        self._call(lambda: self._client.log_outputs(parent, [LoggedModelOutput(model_id, 0)]))

    def _call(self, fn: Any, attempts: int = 8) -> Any:
        """Call the MLflow client; failures become :class:`TrackingError` naming the store."""
        try:
            return _retry(fn, attempts=attempts)
        except TrackingError:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised as is, or as a TrackingError
            if not _is_tracking_failure(exc):
                raise
            raise TrackingError(
                f"MLflow tracking store {self.uri} failed: {_first_line(exc)}; outputs written "
                "so far are complete and were kept"
            ) from exc


def headline_figures(metrics: Mapping[str, float]) -> dict[str, float]:
    """The headline figures among a parent run's metrics (its short-name metrics)."""
    return {h.short: float(metrics[h.short]) for h in HEADLINES if h.short in metrics}


def tag_model_version(
    client: Any, name: str, version: str | int, figures: Mapping[str, float], run: str = ""
) -> None:
    """Tag a registered model version with headline figures (and the run's readable name).

    Tags are the short names of :data:`HEADLINES` with the value as the description
    formats it, so the registry page compares versions by the same figures.
    """
    fmt = {h.short: h.fmt for h in HEADLINES}
    tags = {k: fmt.get(k, "{:g}").format(float(v)) for k, v in figures.items()}
    if run:
        tags["run_name"] = run
    for key, value in tags.items():
        _retry(lambda k=key, val=value: client.set_model_version_tag(name, str(version), k, val))


@dataclass(frozen=True)
class RunRecord:
    """What the comparison shows of one run: name, parameters, metrics, datasets."""

    run_id: str
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    datasets: tuple[tuple[str, str], ...]  # (name, digest)


def load_runs(uri: str, run_ids: Sequence[str], timeout_s: float = 5.0) -> list[RunRecord]:
    """Read runs from a tracking store; an unknown id is a :class:`TrackingError` naming it."""
    _server_reachable(uri, timeout_s)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise TrackingError(f"no MLflow store at {redact_uri(uri)}; run the pipeline first")

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out = []
    for run_id in run_ids:
        try:
            run = _retry(lambda r=run_id: client.get_run(r))
        except Exception as exc:  # noqa: BLE001 - re-raised as is, or as a TrackingError
            if not _is_tracking_failure(exc):
                raise
            raise TrackingError(
                f"run {run_id!r} not found in {redact_uri(uri)}: {_first_line(exc)}"
            ) from exc
        inputs = run.inputs.dataset_inputs if run.inputs is not None else []
        out.append(
            RunRecord(
                run_id=run.info.run_id,
                name=run.info.run_name or run.data.tags.get("mlflow.runName", ""),
                params=dict(run.data.params),
                metrics={k: float(v) for k, v in run.data.metrics.items()},
                datasets=tuple((d.dataset.name, d.dataset.digest) for d in inputs),
            )
        )
    return out


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
        except Exception as exc:  # noqa: BLE001 - retried when the store is locked, else re-raised
            msg = str(exc).lower()
            if ("locked" in msg or "busy" in msg) and i < attempts - 1:
                time.sleep(delay * (2**i))
                continue
            raise


def from_config(tracking_cfg: TrackingConfig) -> Tracker:
    return Tracker(
        uri=str(tracking_cfg.uri),
        artifact_root=str(tracking_cfg.artifact_root),
        experiment=str(tracking_cfg.experiment),
        enabled=bool(tracking_cfg.enabled),
        timeout_s=float(tracking_cfg.timeout_s),
    )
