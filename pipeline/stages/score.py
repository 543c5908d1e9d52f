"""Runner of the ``score`` command: score new borrowers with the champion model.

``python -m pipeline score score.input=PATH score.output=PATH`` where ``PATH`` is a
folder of raw tables (features are built at ``score.snapshot``, default the latest
month) or a Parquet / CSV feature table with ``score.id_column`` and the model's
features (the features stage's own table qualifies: its rows are per borrower and
snapshot). ``score.borrower_id=ID`` scores one borrower (at ``score.snapshot``, else
at its latest snapshot) and prints the result.

The output's suffix decides its format (``.parquet`` or ``.csv``; anything else is
refused) and it is written atomically. It never replaces a file of the artifact
catalog (the model, a raw table, the feature table, ...) nor the scoring input; an
existing file (the default ``models/scores.parquet`` included) only with
``score.overwrite=true``. Rows of a table model are flagged
when a category code or a value lies outside what the model saw in training
(``flag_unseen_category``, ``flag_out_of_range``), or refused with ``score.strict=true``.

A table model scores either its encoded feature table (safe column names, codes) or a
table in the training table's own format (its column names, text categories, numbers
stored as text, read with the training separator rules): the latter is encoded with the
encoding saved in ``model.json``, exactly as in training, and its rows also get
``flag_unparsed_number`` (text where a number belongs, scored as missing). The table's
id column (``data.id`` of training, else row numbers as ``row_id``) is kept beside each
score; the target and other extra columns are ignored.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.adapters import catalog, distributed, model_registry, serving
from pipeline.adapters.tracking import Tracker
from pipeline.base.config import physical_cores, tier_cuts
from pipeline.base.io import DataError, atomic_path, write_parquet
from pipeline.core import features as feat_core
from pipeline.core import scoring as core
from pipeline.core import table as table_core
from pipeline.core.survival import CauseModel
from pipeline.stages.common import Result, say
from pipeline.stages.features import build_features


def champion_or_local(cfg: Any, tracker: Tracker, source: str | None = None) -> core.ScoringModel:
    """The registry champion when tracking is on and the alias exists, else the local model.

    ``source`` (auto | registry | local) overrides ``score.model_source``. The local model
    is the one :func:`pipeline.adapters.catalog.load_scoring_model` reads from ``models/``.
    """
    p = catalog.Catalog.of(cfg)
    source = str(cfg.score.model_source) if source is None else source
    model = None
    if source in ("auto", "registry") and tracker.enabled:
        name = model_registry.registered_name(cfg) or ""
        model = model_registry.load_champion(tracker, name, str(cfg.model.champion_alias), p.models)
        if model is None and source == "registry":
            raise DataError(
                f"registry: no model version has the alias "
                f"'{cfg.model.champion_alias}' under '{name}' (score.model_source=registry)"
            )
    if model is not None and source == "auto":
        _same_as_published(model, p)
    if model is None:
        model = catalog.load_scoring_model(p.models)
    _attach_meta(cfg, model)
    return model


def _trees(booster: Any) -> Any:
    return booster.dump_model().get("tree_info")


def _same_as_published(champion: core.ScoringModel, p: catalog.Catalog) -> None:
    """Refuse a registry champion that is not the model published under ``models/``.

    They part when a training run registered its model and then died before its
    outputs were published, or when a run with tracking off published a model the
    registry never saw: scoring with one while the summary, reasons and report describe
    the other would be a silent wrong result. The user says which to use.
    """
    path = p.path("model")
    if not path.exists():
        return  # nothing published here: the champion is the only model there is
    local = catalog.load_booster(path)
    if _trees(local) == _trees(champion.booster):
        return
    raise DataError(
        f"{champion.source} is not the model published in {path} (their trees differ): a "
        "training run may have stopped after registering, before publishing, or a run "
        "without tracking published another model. Choose one: score.model_source=registry "
        "(the champion) or score.model_source=local (the published model, which the "
        "summary and report describe)"
    )


def _attach_meta(cfg: Any, model: core.ScoringModel) -> None:
    """Give ``model`` its metadata when the loader did not (the local ``model.json`` when
    it describes a model with the same mode and features)."""
    if model.meta:
        return
    path = catalog.Catalog.of(cfg).path("model_meta")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(meta, dict) or meta.get("mode", "simulator") != model.mode:
        return
    if list(meta.get("feature_names", [])) == model.names:
        model.meta = meta


def cause_model_for(cfg: Any, model: core.ScoringModel) -> tuple[CauseModel | None, str]:
    """The published cause model when it was fitted beside the model that scores (same
    features, same trees), else None and why (said in one console line)."""
    p = catalog.Catalog.of(cfg)
    cause, why = catalog.published_cause_model(p.models, model.mode, bool(cfg.model.survival))
    if cause is None:
        return None, why
    if cause.names != model.names:
        return None, f"the cause model reads other features than {model.source}"
    if not model.source.startswith("local") and _trees(
        catalog.load_booster(p.path("model"))
    ) != _trees(model.booster):
        return None, f"the cause model was fitted beside {p.path('model')}, not {model.source}"
    return cause, ""


def curves_line(cause: CauseModel | None, why: str) -> str:
    """The console line saying which curves the scores carry, or why none."""
    if cause is None:
        return f"score: no risk curves (risk_h* columns absent): {why}"
    hs = ", ".join(str(t) for t in cause.horizons)
    unvalidated = [t for t in cause.horizons if t not in cause.validated]
    note = (
        f"; {', '.join(map(str, unvalidated))} months not validated (no out-of-time row "
        "observes them)"
        if unvalidated
        else ""
    )
    return (
        f"score: risk curves at {hs} months from the cause model (risk_h<t>: any "
        f"never-overdue closure; risk_h<t>_<cause>: by cause){note}"
    )


def raw_months(raw_dir: Path) -> int:
    path = catalog.file_in(raw_dir, "account_months")
    if not path.exists():
        raise DataError(f"{path}: file not found (score.input must hold the raw tables)")
    months = catalog.read_entry("account_months", path, ["month"]).column("month").to_numpy()
    if len(months) == 0:
        raise DataError(f"{path}: table has no rows")
    return int(months.max()) + 1


def features_from_raw(cfg: Any, raw_dir: Path, snapshot: int | None) -> tuple[pd.DataFrame, int]:
    """Features of every eligible account at ``snapshot`` (default: the latest month)."""

    n_months = raw_months(raw_dir)
    snap = n_months - 1 if snapshot is None else int(snapshot)
    if not 1 <= snap <= n_months - 1:
        raise DataError(
            f"{raw_dir}: score.snapshot = {snap} is outside the months of the data [1, {n_months - 1}]"
        )
    f = cfg.features
    spec = feat_core.FeatureSpec(
        snapshots=(snap,),
        horizon=int(f.horizon),
        valid_snapshots=(),
        oot_snapshots=(),
        fund_days=int(f.fund_days),
        small_draw_ratio=float(f.small_draw_ratio),
        never_overdue_only=bool(f.never_overdue_only),
    )
    table = build_features(
        raw_dir,
        n_months,
        spec,
        int(cfg.data.block_size),
        engine=cfg.engine,
    )
    df = table.to_pandas().drop(columns=["split", "label", "label_cause"])
    return df, snap


OUTPUT_FORMATS = (".parquet", ".csv")


def _protected(cfg: Any, inp: Path) -> list[tuple[Path, str, bool]]:
    """(path, what it is, whether it is a folder or pattern) for what scores never replace."""
    cat = catalog.Catalog.of(cfg)
    out = []
    for name, entry in catalog.ENTRIES.items():
        if entry.writer == "score":  # its own output (the default score.output)
            continue
        what = f"the pipeline's '{name}' file ({entry.folder} folder, written by {entry.writer})"
        if name == "model":
            what = f"the model ({what})"
        where = cat.folder(entry.folder) / entry.pattern  # a family: the glob of its files
        out.append((where, what, entry.fmt == "folder" or entry.family))
    out.append((inp, "the scoring input (score.input)", inp.is_dir()))
    if str(cfg.data.path):
        out.append((Path(str(cfg.data.path)), "the training table (data.path)", False))
    return out


def check_output(cfg: Any, inp: Path) -> Path:
    """``score.output`` (default ``models/scores.parquet``), refused before any work when it
    would replace what it must not, is a folder, or has no scores format suffix."""
    s = cfg.score
    given = bool(str(s.output))
    out = Path(str(s.output)) if given else catalog.Catalog.of(cfg).path("scores")
    head = f"score.output = {out}"
    if out.is_dir() or str(s.output).endswith(("/", "\\")):
        raise DataError(f"{head}: is a folder (rule: a file name ending in .parquet or .csv)")
    target = Path(str(out)).resolve()  # str: the published path, never a staged copy
    for path, what, family in _protected(cfg, inp):
        where = Path(str(path)).resolve()
        hit = target == where or (
            family and (where in target.parents or fnmatch.fnmatch(str(target), str(where)))
        )
        if hit:
            raise DataError(
                f"{head}: refused, it is {what}; scores never replace the model, a pipeline "
                "file or an input, even with score.overwrite=true (choose another file)"
            )
    if out.suffix.lower() not in OUTPUT_FORMATS:
        raise DataError(
            f"{head}: suffix '{out.suffix}' is not a scores format "
            "(rule: the suffix decides the format, .parquet or .csv)"
        )
    # the default output too: a second score must not silently replace the first scores
    if out.exists() and not bool(s.overwrite):
        default = "" if given else " (the default, score.output is empty)"
        raise DataError(
            f"{head}{default}: the file exists (rule: set score.overwrite=true to replace it, "
            "or score.output to another file)"
        )
    return out


def read_input(
    cfg: Any, model: core.ScoringModel, inp: Path
) -> tuple[pd.DataFrame, str, int | None, dict[str, np.ndarray] | None]:
    """The rows to score, their id column, the snapshot month they were built at, and
    the flags of a raw table encoded with the model's saved encoding (None otherwise)."""
    s = cfg.score
    if model.mode == "table" and (inp.is_dir() or not str(s.input)):
        table = model.meta.get("table", {})
        encoded = table.get("features_path") or catalog.Catalog.of(cfg).path("table_features")
        raise DataError(
            f"{inp}: a folder of raw tables in the simulator's layout (score.input), but the "
            f"model ({model.source}) was trained on the table {table.get('path', '?')} "
            "(rule: a table model scores a Parquet/CSV file with its id column "
            f"'{model.id_column}' and either the training table's columns or its encoded "
            f"features, e.g. {encoded}; "
            "set score.input)"
        )
    if inp.is_dir():
        df, month = features_from_raw(cfg, inp, s.snapshot)
        say(f"score: {len(df):,} eligible accounts at month {month} built from {inp}")
        return df, "borrower_id", month, None
    id_col = str(s.id_column)
    if model.mode == "table" and id_col == "borrower_id" and model.meta:
        id_col = model.id_column  # the default follows the table model's own id
    if model.mode == "table":
        raw = _raw_table(cfg, model, inp, id_col)
        if raw is not None:
            return raw.frame, id_col, None, raw.flags
    df = core.read_feature_file(inp, model.names, id_col, model.mode == "table")
    snap = None if s.snapshot is None else int(s.snapshot)
    if snap is not None and "snapshot" in df.columns:
        df = df[df.snapshot == snap].reset_index(drop=True)
        if len(df) == 0:
            raise DataError(f"{inp}: no row with snapshot = {snap} (score.snapshot)")
    return df, id_col, snap, None


def _raw_table(cfg: Any, model: core.ScoringModel, inp: Path, id_col: str) -> core.RawRows | None:
    """A table model's own raw table, encoded with the saved encoding; None when ``inp``
    already holds the encoded features (or the model saves no encoding)."""
    enc = core.model_encoding(model.meta, model.names)
    if enc is None:
        return None
    if not inp.exists():
        raise DataError(f"{inp}: file not found (score.input)")
    # the separator rules of training: data.sep when set, else the training run's, else detected
    trained = model.meta.get("config", {}).get("data", {}) or {}
    sep = str(cfg.data.get("sep", "") or trained.get("sep", "") or "")
    df = table_core.read_any(inp, sep)
    if core.is_encoded(df, model.names) and id_col in df.columns:
        return None  # the encoded feature table (a numbers-only table without ids is raw)
    if enc.text_columns and not inp.name.lower().endswith((".parquet", ".pq")):
        df = table_core.read_any(inp, sep, text_columns=enc.text_columns)  # text as in the file
    df = df.reset_index(drop=True)
    rows = core.encode_raw(df, enc, inp, id_col)
    if bool(cfg.score.strict):
        core.refuse_findings(df, rows, inp, id_col)
    counts = {k: int((v != "").sum()) for k, v in rows.flags.items()}
    say(
        f"score: {len(df):,} rows of {inp} encoded as in training ({len(enc.columns)} columns)"
        + (
            "; flagged (scored anyway): " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
            if any(counts.values())
            else ""
        )
    )
    return rows


def one_borrower(
    df: pd.DataFrame, id_col: str, bid: Any, inp: Path, snap: int | None
) -> pd.DataFrame:
    """The row of ``bid`` (its latest snapshot when the table holds several)."""
    mine = df[df[id_col] == bid]
    if len(mine) == 0:
        ids = df[id_col].drop_duplicates().sort_values().head(5).tolist()
        raise DataError(
            f"{inp}: no eligible row with {id_col} = {bid} (score.borrower_id)"
            + (f" at month {snap}" if snap is not None else "")
            + f"; {df[id_col].nunique():,} ids are there, e.g. {', '.join(map(str, ids))}"
        )
    if "snapshot" in mine.columns and len(mine) > 1:
        mine = mine[mine.snapshot == mine.snapshot.max()]
    return mine


def guard_rows(
    cfg: Any, model: core.ScoringModel, df: pd.DataFrame, id_col: str, inp: Path
) -> dict[str, np.ndarray]:
    """Per-row flags of a table model's unseen categories and out-of-range values.

    ``score.strict=true`` refuses such rows instead. Simulator models need none: their
    feature bounds are part of the input schema.
    """
    if model.mode != "table":
        return {}
    if not model.meta:
        raise DataError(
            f"{model.source}: the table model's metadata (categories, training ranges) is "
            "not available, so its rows cannot be checked"
        )
    guards = serving.table_guards(catalog.Catalog.of(cfg), model.meta)
    numeric = [n for n in model.names if n not in guards.codes]
    unknown = [n for n in numeric if n not in guards.ranges]
    if unknown and bool(cfg.score.strict):
        raise DataError(
            f"{model.source}: the training range of column(s) {', '.join(unknown)} is not "
            "known (the model's metadata saves none and the training rows are gone), so "
            "score.strict=true cannot check them"
        )
    if bool(cfg.score.strict):
        core.refuse_flagged(df, guards, inp, df[id_col].to_numpy())
    flags = core.guard_flags(df, guards)
    n_flagged = {k: int((v != "").sum()) for k, v in flags.items()}
    if any(n_flagged.values()):
        say(
            "score: rows outside what the model saw in training (scored and flagged): "
            + ", ".join(f"{k} {v:,}" for k, v in n_flagged.items())
        )
    return flags


def write_scores(table: pd.DataFrame, out: Path) -> None:
    if out.suffix.lower() == ".csv":
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    else:
        write_parquet(pa.Table.from_pandas(table, preserve_index=False), out)


@dataclass(frozen=True)
class ScoreResult(Result):
    """Rows scored, where they were written, and the model that scored them."""

    rows: int = 0
    output: str = ""
    source: str = ""


def score(cfg: Any, tracker: Tracker) -> ScoreResult:
    s = cfg.score
    inp = Path(str(s.input)) if s.input else catalog.Catalog.of(cfg).raw
    out = check_output(cfg, inp)
    model = champion_or_local(cfg, tracker)
    say(f"score: model from {model.source} (reasons: {model.attribution} cause split)")
    cause, why = cause_model_for(cfg, model)
    say(curves_line(cause, why))
    df, id_col, snap, raw_flags = read_input(cfg, model, inp)
    if s.borrower_id is not None:
        bid = s.borrower_id if pd.api.types.is_integer_dtype(df[id_col]) else str(s.borrower_id)
        df = one_borrower(df, id_col, bid, inp, snap)
    if raw_flags is None:
        flags = guard_rows(cfg, model, df, id_col, inp)
    else:  # the encoding flagged the raw rows; keep those of the rows scored
        flags = {k: v[df.index.to_numpy()] for k, v in raw_flags.items()}
    threads = physical_cores()
    with contextlib.ExitStack() as stack:
        shap_fn = None
        if cfg.engine.kind == "dask":  # SHAP row blocks on the cluster, same values
            client = stack.enter_context(distributed.client_for(cfg.engine))

            def shap_fn(booster: Any, X: np.ndarray) -> np.ndarray:
                return distributed.shap_values(
                    client, booster, X, n_threads=int(cfg.engine.threads_per_worker)
                )

        table = core.score_frame(
            model,
            df,
            id_col,
            tier_cuts(s, model.meta),
            [str(t) for t in s.tier_names],
            int(s.top_k),
            int(s.advice_rows),
            threads,
            shap_fn=shap_fn,
            cause=cause,
        )
    for name, values in flags.items():
        table[name] = values
    table["model_source"] = model.source
    write_scores(table, out)
    counts = {str(t): int((table.tier == t).sum()) for t in s.tier_names}
    metrics = {"rows": float(len(table)), "mean_probability": float(table.probability.mean())}
    metrics.update({f"tier.{t}": float(c) for t, c in counts.items()})
    metrics.update({f"{k}.rows": float((v != "").sum()) for k, v in flags.items()})
    tracker.log_metrics(metrics)
    tracker.set_tags({"model_source": model.source, "input": str(inp)})
    tracker.log_artifact(out, "scores")
    say(
        f"score: {len(table):,} rows -> {out}; tiers "
        + ", ".join(f"{t} {c:,}" for t, c in counts.items())
    )
    if s.borrower_id is not None:
        _print_one(table.iloc[0], int(s.top_k))
    part: dict[str, Any] = {"rows": len(table), "tiers": counts, "source": model.source}
    part["curves"] = (
        {"horizons": cause.horizons, "validated": cause.validated}
        if cause is not None
        else {"absent": why}
    )
    if flags:
        part["flagged_rows"] = {k: int((v != "").sum()) for k, v in flags.items()}
    return ScoreResult(
        summary={"score": part}, rows=len(table), output=str(out), source=model.source
    )


def _print_one(row: pd.Series, top_k: int) -> None:
    lines = [f"  probability {row.probability:.2%}, tier {row.tier}"]
    for r in range(1, top_k + 1):
        en = row.get(f"reason_{r}_en")
        if isinstance(en, str) and en and np.isfinite(row.get(f"reason_{r}_shap", 0.0)):
            lines.append(f"  {r}. {row[f'reason_{r}_zh']} / {en}")
    for r in range(1, top_k + 1):  # under the lowest tier: no closure concern, what protects
        en = row.get(f"protect_{r}_en")
        if isinstance(en, str) and en:
            lines.append(f"  - {row[f'protect_{r}_zh']} / {en}")
    if row.advice_en:
        lines.append("  advice:\n" + "\n".join(f"    - {a}" for a in row.advice_en.split("\n")))
    say("\n".join(lines))
