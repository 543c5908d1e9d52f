"""Every key of the config schema, walked with values out of its range.

The keys come from the dataclass schemas themselves (nested groups, and the entries of
the dict-valued keys as the real composed config holds them), so a key added later is
walked too. For every probe, :func:`validate` either accepts the value or raises a
:class:`ConfigError` whose message names the key; any other exception fails.

* numbers: -1, 0 and a huge value (NaN and both infinities too for floats). NaN and
  infinities are always refused; -1 is refused unless the key is in ``NEGATIVE_OK``.
  A list of numbers is probed through its first item.
* strings: a value no key accepts. It is refused unless the key is in ``FREE_TEXT``.
* booleans: the schema's type already admits only true and false.

A new key that has no check and no exemption fails here, and so does an exemption for a
key that is checked after all (or no longer exists).
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
import types
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
from helpers import compose_config
from omegaconf import OmegaConf

from pipeline.base.config import CHOICES, Config, ConfigError, validate

#: numeric keys where -1 is a valid value (each still refuses NaN and infinities)
NEGATIVE_OK = {
    # points at the base odds: the scale may sit anywhere, a negative score is a shift
    "model.scorecard.base_score",
    # months before month 0: the burn-in of a going concern, or earlier (in force from the
    # start); bounded below by config.EARLIEST_MONTH
    "simulator.competitor_midpoint",
    "simulator.tightening_month",
}

#: string keys that accept any text of their kind, and who checks them instead
FREE_TEXT = {
    # folders: any path; stages create them or report what is missing
    "paths.root",
    "paths.data_dir",
    "paths.raw_dir",
    "paths.truth_dir",
    "paths.processed_dir",
    "paths.models_dir",
    "paths.outputs_dir",
    # the tracking store and artifact location: MLflow checks them when it connects
    "tracking.uri",
    "tracking.artifact_root",
    # names in the tracking store: any non-empty text
    "tracking.experiment",
    "tracking.registered_model",
    # table mode: a file and its column names, checked against the table when it is read
    "data.path",
    "data.target",
    "data.id",
    "data.time",
    "data.positive",
    # a scheduler address, checked when the engine connects; a scratch folder
    "engine.address",
    "engine.local_directory",
    # score: paths and a column name, checked against the files by the score stage
    "score.input",
    "score.output",
    "score.id_column",
    # tier labels: any text, their count is checked against score.tier_cuts
    "score.tier_names",
    # set by the command-line entry point, which dispatches on it
    "stage",
}

#: keys holding a whole mapping set at once (typed Any so that a command line can set
#: it), each probed by :func:`test_mapping_key_refuses_bad_values_naming_it`
MAPPINGS = {"data.monotone": ({"x": 2}, 5, "up")}

BOGUS = "?no such value?"
INT_PROBES: tuple[Any, ...] = (-1, 0, 10**12)
FLOAT_PROBES: tuple[Any, ...] = (-1.0, 0.0, 1e12, math.nan, math.inf, -math.inf)


def _base(hint: Any) -> Any:
    """``X`` for ``X | None`` (and ``Optional[X]``); ``hint`` otherwise."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _leaves(schema: type, node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, leaf type) for every leaf of ``schema``; a list key keeps its type."""
    out: list[tuple[str, Any]] = []
    hints = get_type_hints(schema)
    for f in fields(schema):  # type: ignore[arg-type]
        key, hint = f"{prefix}{f.name}", _base(hints[f.name])
        if is_dataclass(hint):
            out += _leaves(hint, node[f.name], f"{key}.")  # type: ignore[arg-type]
        elif get_origin(hint) is dict:
            value_type = get_args(hint)[1]
            out += [(f"{key}.{name}", value_type) for name in node[f.name]]
        else:
            out.append((key, hint))
    return out


CFG = compose_config(Path(tempfile.gettempdir()) / "config-walk")
LEAVES = _leaves(Config, CFG)
NUMERIC = [
    (k, t) for k, t in LEAVES if _base(t) in (int, float) or get_args(t) in ((int,), (float,))
]
TEXT = [(k, t) for k, t in LEAVES if t is str or get_args(t) == (str,)]
BOOLS = [k for k, t in LEAVES if t is bool]


def _with(key: str, value: Any) -> Any:
    """A copy of the composed config with ``key`` (a list: its first item) set to ``value``."""
    cfg = copy.deepcopy(CFG)
    current = OmegaConf.select(cfg, key)
    if OmegaConf.is_list(current):
        current[0] = value
    else:
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _outcome(key: str, value: Any) -> str | None:
    """None when ``validate`` accepts; the message when it refuses naming ``key``."""
    cfg = _with(key, value)
    try:
        validate(cfg)
    except ConfigError as err:
        msg = str(err)
        assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", msg), (
            f"{key}={value!r} refused, but the message does not name the key: {msg}"
        )
        return msg
    return None


def test_the_walk_reaches_every_leaf_and_the_exemptions_are_real():
    kinds = {k: t for k, t in LEAVES}
    unknown = [k for k in kinds if k not in {*dict(NUMERIC), *dict(TEXT), *BOOLS, *MAPPINGS}]
    assert not unknown, f"keys of a kind the walk does not know how to probe: {unknown}"
    assert NEGATIVE_OK <= dict(NUMERIC).keys()
    assert FREE_TEXT <= dict(TEXT).keys()
    assert not FREE_TEXT & CHOICES.keys()
    # the walk is the schema: nested groups and dict entries included
    assert {"model.scorecard.pdo", "simulator.closure_base.thin_file"} <= kinds.keys()
    assert len(NUMERIC) > 100 and len(TEXT) > 30


def test_the_composed_config_passes():
    validate(CFG)


@pytest.mark.parametrize(("key", "kind"), NUMERIC, ids=[k for k, _ in NUMERIC])
def test_numeric_key_refuses_out_of_range_values_naming_it(key, kind):
    is_float = float in (kind, *get_args(kind))
    refused = {repr(v): _outcome(key, v) for v in (FLOAT_PROBES if is_float else INT_PROBES)}
    if is_float:
        for v in ("nan", "inf", "-inf"):
            assert refused[v], f"{key}={v} is accepted: a float key must be finite"
    if key in NEGATIVE_OK:
        assert refused["-1.0" if is_float else "-1"] is None, f"{key}: stale NEGATIVE_OK entry"
    else:
        assert refused["-1.0" if is_float else "-1"], (
            f"{key}=-1 is accepted: give the key a range check in pipeline/base/config.py, "
            "or list it in NEGATIVE_OK with the reason"
        )


@pytest.mark.parametrize("key", sorted(MAPPINGS))
def test_mapping_key_refuses_bad_values_naming_it(key):
    for value in MAPPINGS[key]:
        cfg = _with(key, value)
        OmegaConf.update(cfg, "data.kind", "table")
        OmegaConf.update(cfg, "data.path", "x.csv")
        OmegaConf.update(cfg, "data.target", "y")
        with pytest.raises(ConfigError, match=re.escape(key)):
            validate(cfg)


@pytest.mark.parametrize("key", [k for k, _ in TEXT])
def test_string_key_refuses_an_unknown_value_naming_it(key):
    refused = _outcome(key, BOGUS)
    if key in FREE_TEXT:
        assert refused is None, f"{key} is checked after all: remove it from FREE_TEXT"
    else:
        assert refused, (
            f"{key}={BOGUS!r} is accepted: give the key its allowed values (CHOICES) or a "
            "format check, or list it in FREE_TEXT with the reason"
        )


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_enumerated_key_accepts_each_allowed_value(key):
    for value in CHOICES[key]:
        cfg = _with(key, value)
        if key == "bench.rows":
            OmegaConf.update(cfg, key, [value], merge=False)
        if value == "table":  # table mode needs its file and target column
            OmegaConf.update(cfg, "data.path", "x.csv")
            OmegaConf.update(cfg, "data.target", "y")
        validate(cfg)
