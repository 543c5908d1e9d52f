"""The cost of each stage as a function of the borrowers: measured, fitted, extrapolated.

``python -m pipeline.tools.scale measure --sizes 20000,100000 --root R`` runs the
stages of a simulator run one by one, each in its own process, at every size, and
appends one record per stage and size to ``--runs`` (a JSON file): wall seconds, CPU
seconds (user + system, the process and the children it waited for), peak resident
memory (the largest of those processes) and the bytes the stage added under ``R``.
Each process pays the interpreter's and the libraries' start (about 4-5 s here).

A ``startup`` record (``python -m pipeline --help``: the interpreter, the libraries
and Hydra's composition, no work) is measured once per call.

``python -m pipeline.tools.scale fit --runs F`` fits, per stage, ``cost = s + a * n^b``
to the CPU and wall seconds and the peak memory, ``s`` the startup's (least squares on
the logarithms of what is left), and a line to the bytes written, and prints them as Markdown with the prediction for 1M, 10M and 100M
borrowers on 1, 16 and 64 workers. The prediction on ``W`` workers assumes what no run
here measured: the borrowers split evenly, each worker doing one share's work with the
measured machine's cores (wall and memory of ``n / W`` borrowers), nothing shuffled
between them, and the power law holding beyond the largest measured size. It is a
model to be checked by larger runs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.base.config import physical_cores
from pipeline.base.io import write_json

#: The stages a run measures, in the order a run takes them.
STAGES: tuple[str, ...] = ("generate", "features", "train", "survival", "explain")
#: Sizes (borrowers) the prediction is printed for, and workers.
PREDICT_SIZES: tuple[int, ...] = (1_000_000, 10_000_000, 100_000_000)
PREDICT_WORKERS: tuple[int, ...] = (1, 16, 64)
#: Keys the tool sets itself for every stage (an override of them is refused).
_OWNED = ("data.n_borrowers", "paths.root", "tracking")
#: A worker's memory (GiB) beyond which the prediction calls a stage failed.
WORKER_GIB = 16.0


def _tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.exists() else 0


def measure_stage(
    stage: str, n: int, root: Path, extra: Sequence[str], log: Path
) -> dict[str, Any]:
    """Run one stage in its own process and read its resources from the kernel."""
    before = _tree_bytes(root)
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        *(
            ["--help"]
            if stage == "startup"
            else [stage, f"data.n_borrowers={n}", f"paths.root={root}", "tracking=off", *extra]
        ),
    ]
    t0 = time.perf_counter()
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"scale: `{' '.join(cmd)}` exited with {code} (its output: {log})")
    return {
        "stage": stage,
        "n_borrowers": int(n),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss / 1024**2,  # kB on Linux
        "bytes_written": _tree_bytes(root) - before,
        "cores": physical_cores(),
        "overrides": list(extra),
    }


def measure(
    sizes: Sequence[int],
    root: Path,
    runs: Path,
    extra: Sequence[str],
    stages: Sequence[str] = STAGES,
) -> list[dict]:
    """Every stage (of ``stages``) at every size, appended to ``runs`` as each finishes
    (so a run cut short keeps what it measured)."""
    records: list[dict[str, Any]] = json.loads(runs.read_text()) if runs.exists() else []
    root.mkdir(parents=True, exist_ok=True)
    records.append(measure_stage("startup", 0, root, (), root / "scale.log"))
    write_json(records, runs)
    for n in sizes:
        where = root / f"n{n}"
        where.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            rec = measure_stage(stage, n, where, extra, where / "scale.log")
            records.append(rec)
            write_json(records, runs)
            print(
                f"scale: {stage:<9} n={n:>9,}  wall {rec['wall_s']:7.1f} s  cpu "
                f"{rec['cpu_s']:7.1f} s  peak {rec['peak_rss_gib']:5.2f} GiB  wrote "
                f"{rec['bytes_written'] / 1e6:8.1f} MB",
                flush=True,
            )
    return records


def power_law(n: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``y = a * n^b`` by least squares on logarithms, with R^2 on that scale."""
    x, z = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(y, dtype=float))
    if len(np.unique(x)) < 2:
        raise ValueError("a power law needs at least two sizes")
    b, log_a = np.polyfit(x, z, 1)
    resid = z - (log_a + b * x)
    tot = float(np.sum((z - z.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / tot if tot > 0 else 1.0
    return {"a": float(np.exp(log_a)), "b": float(b), "r2": r2}


def linear(n: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``y = r0 + r1 * n`` by least squares."""
    r1, r0 = np.polyfit(np.asarray(n, dtype=float), np.asarray(y, dtype=float), 1)
    return {"r0": float(r0), "r1": float(r1)}


_COSTS = ("cpu_s", "wall_s", "peak_rss_gib")
#: Overrides that change a stage's own work: its records under them are shown, not fitted.
CHANGES_WORK: dict[str, tuple[str, ...]] = {
    "explain": ("model.survival",),
    "survival": ("model.survival",),
}


def _key(override: str) -> str:
    """The config key a Hydra override sets (``+a.b=1`` and ``~a.b`` -> ``a.b``)."""
    return str(override).split("=")[0].lstrip("+~")


def fitted(record: dict[str, Any]) -> bool:
    """Whether a record measured the stage's default work (see :data:`CHANGES_WORK`)."""
    keys = {_key(o) for o in record.get("overrides", [])}
    return not keys & set(CHANGES_WORK.get(str(record["stage"]), ()))


def _startup(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The median startup record's CPU and wall seconds and memory (0 without one)."""
    rows = [r for r in records if r["stage"] == "startup"]
    if not rows:
        return dict.fromkeys(_COSTS, 0.0)
    return {k: float(np.median([r[k] for r in rows])) for k in _COSTS}


def fit(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage: power laws of the CPU seconds, wall seconds and peak memory beyond the
    startup's, a line of the bytes written, and the sizes they rest on (the last record
    of each stage and size; records under overrides that change the stage's work,
    :data:`CHANGES_WORK`, are left out).

    With three sizes or more the smallest is left out of the fit and kept as its check
    (``check``: its measured CPU seconds and peak memory beside the fit's): the work a
    stage does regardless of size (a fixed oracle sample, a capped explanation sample)
    weighs most there, and the slope that matters for larger worlds is the one between
    the larger sizes."""
    start = _startup(records)
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        every = {int(r["n_borrowers"]): r for r in records if r["stage"] == stage and fitted(r)}
        if len(every) < 2:
            continue
        small = min(every)
        rows = {k: v for k, v in every.items() if k != small} if len(every) >= 3 else every
        n = np.array(sorted(rows))

        def get(k: str, rows: dict[int, dict[str, Any]] = rows, n: np.ndarray = n) -> np.ndarray:
            return np.array([rows[int(v)][k] for v in n], dtype=float)

        law = {
            k: {**power_law(n, np.maximum(get(col) - start[col], 1e-3)), "startup": start[col]}
            for k, col in (("cpu", "cpu_s"), ("wall", "wall_s"), ("rss", "peak_rss_gib"))
        }
        out[stage] = {
            "sizes": [int(v) for v in n],
            **law,
            "bytes": linear(n, get("bytes_written")),
            "cores": int(max(r.get("cores", 1) for r in rows.values())),
        }
        if small not in rows:
            p = predict(out[stage], small, 1)
            out[stage]["check"] = {
                "n_borrowers": small,
                "cpu_s": float(every[small]["cpu_s"]),
                "predicted_cpu_s": p["cpu_s"],
                "peak_rss_gib": float(every[small]["peak_rss_gib"]),
                "predicted_rss_gib": p["rss_gib"],
            }
    return out


def predict(model: dict[str, Any], n: float, workers: int = 1) -> dict[str, float]:
    """One stage at ``n`` borrowers on ``workers`` workers (each one share of ``n / W``
    borrowers; see the module's assumptions)."""
    share = n / workers
    c, w, m = model["cpu"], model["wall"], model["rss"]
    # a worker's wall is at least its share of the CPU seconds over its cores
    busy = c["a"] * share ** c["b"] / max(int(model.get("cores", 1)), 1)
    return {
        "cpu_s": workers * c["startup"] + c["a"] * n ** c["b"],
        "wall_s": w["startup"] + max(w["a"] * share ** w["b"], busy),
        "rss_gib": m["startup"] + m["a"] * share ** m["b"],
        "bytes": model["bytes"]["r0"] + model["bytes"]["r1"] * n,
    }


def _hms(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.1f} d"


def measured(records: Sequence[dict[str, Any]]) -> str:
    """The records as a Markdown table, in the order they were measured."""
    lines = [
        "| stage | borrowers | wall s | CPU s | peak GiB | MB written |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['stage']}{'' if fitted(r) else ' (' + ' '.join(r['overrides']) + ', not fitted)'} "
            f"| {int(r['n_borrowers']):,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['peak_rss_gib']:.2f} | {r['bytes_written'] / 1e6:.1f} |"
        )
    return "\n".join(lines)


def markdown(models: dict[str, dict[str, Any]]) -> str:
    """The fitted laws and their predictions, as Markdown tables."""
    lines = [
        "| stage | sizes fitted | CPU s = s + a n^b | R^2 | wall s = s + a n^b | peak GiB = "
        "s + a n^b | check at the smallest size: CPU s, GiB (fit / measured) |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, m in models.items():
        c, w, r = m["cpu"], m["wall"], m["rss"]
        k = m.get("check")
        check = (
            f"{k['n_borrowers']:,}: {k['predicted_cpu_s']:.1f} / {k['cpu_s']:.1f}, "
            f"{k['predicted_rss_gib']:.2f} / {k['peak_rss_gib']:.2f}"
            if k
            else "none (two sizes)"
        )
        lines.append(
            f"| {stage} | {', '.join(f'{v:,}' for v in m['sizes'])} | {c['startup']:.1f} + "
            f"{c['a']:.3g} n^{c['b']:.2f} | {c['r2']:.3f} | {w['startup']:.1f} + {w['a']:.3g} "
            f"n^{w['b']:.2f} | {r['startup']:.2f} + {r['a']:.3g} n^{r['b']:.2f} | {check} |"
        )
    lines += [
        "",
        "| borrowers | workers | "
        + " | ".join(f"{s} wall / GiB" for s in models)
        + " | first to fail (> "
        + f"{WORKER_GIB:.0f} GiB a worker) |",
        "|---|---|" + "---|" * len(models) + "---|",
    ]
    for n in PREDICT_SIZES:
        for w in PREDICT_WORKERS:
            cells, failed = [], "none"
            for stage, m in models.items():
                p = predict(m, n, w)
                cells.append(f"{_hms(p['wall_s'])} / {p['rss_gib']:.1f}")
                if failed == "none" and p["rss_gib"] > WORKER_GIB:
                    failed = stage
            lines.append(f"| {n:,} | {w} | " + " | ".join(cells) + f" | {failed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.tools.scale", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run every stage at every size and record its cost")
    m.add_argument("--sizes", required=True, help="borrowers, comma-separated")
    m.add_argument("--root", required=True, type=Path, help="where the worlds are written")
    m.add_argument("--runs", required=True, type=Path, help="the JSON file records go to")
    m.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated, in run order (default: all)"
    )
    m.add_argument("overrides", nargs="*", help="Hydra overrides for every stage")
    f = sub.add_parser("fit", help="fit the cost laws and print their predictions")
    f.add_argument("--runs", required=True, type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "measure":
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
        stages = [s.strip() for s in str(args.stages).split(",") if s.strip()]
        owned = [o for o in args.overrides if _key(o) in _OWNED]
        if owned:
            print(f"scale: {', '.join(owned)}: set by --sizes and --root, not as an override")
            return 2
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            print(f"scale: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
            return 2
        measure(sizes, args.root, args.runs, args.overrides, stages)
        return 0
    try:
        records = json.loads(args.runs.read_text())
    except (OSError, ValueError) as err:
        print(f"scale: cannot read {args.runs}: {err}", file=sys.stderr)
        return 2
    print(measured(records) + "\n\n" + markdown(fit(records)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
