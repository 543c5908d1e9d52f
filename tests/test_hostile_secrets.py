"""Secrets never printed, config errors named: the hostile cases of the console surface.

Each case once printed a password or token: MLflow's run links (through its loggers),
Hydra's error line (which repeats the override), exception texts in the log file. And a
misspelt key got Hydra's message, without the group's known keys and with its
``HYDRA_FULL_ERROR`` hint.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import pytest

from pipeline.adapters.logfile import RedactingStream, route_to_file
from pipeline.base.config import REPO_ROOT, unknown_override

SECRET = "pw5ecret-Zq8"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "generate", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_misspelt_key_is_refused_with_the_known_keys_and_no_value(tmp_path):
    r = _cli(f"tracking.urii=http://u:{SECRET}@h:1", f"paths.root={tmp_path}")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "config key 'tracking.urii'" in out and "known: enabled, uri," in out
    assert SECRET not in out and "HYDRA_FULL_ERROR" not in out and "Traceback" not in out


@pytest.mark.parametrize(
    "bad",
    [
        f"simulator.closure_base={{fund_misuse:http://u:{SECRET}@h:1}}",  # a text for a number
        f"simulator.closure_base={{fund_misuse:{SECRET}}}",  # a bare token, not a URI
        "simulator.closure_base={no_such_cause:0.1}",  # a key the mapping does not hold
        f"tracking.timeout_s=1,[http://u:{SECRET}@h:1",  # not valid override syntax
        "hydra.job.chdir=maybe",  # Hydra's own keys compose with the rest
        "~data.n_borrowers",  # a key the schema cannot lose
    ],
)
def test_what_hydra_refuses_is_one_line_with_exit_2_and_no_value(tmp_path, bad):
    """Composed before Hydra runs (which answered with exit 1, its search path and the
    value as typed): Hydra's reason, the override named by its key only."""
    r = _cli(bad, f"paths.root={tmp_path}")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert bad.split("=")[0] in lines[0], lines[0]
    assert SECRET not in out and "HYDRA_FULL_ERROR" not in out and "Traceback" not in out
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize(
    "flags", [["--config-name", "nope"], ["--config-name=nope"], ["-cn", "nope.yaml"]]
)
def test_a_primary_config_that_does_not_exist_is_one_line_with_exit_2(tmp_path, flags):
    """Hydra answered with exit 1 and its config search path."""
    r = _cli(*flags, f"paths.root={tmp_path}")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such primary config in conf/" in lines[0], out
    assert "choose one of: config" in lines[0] and "provider=" not in out
    assert not any(tmp_path.iterdir())


def test_unknown_override_walks_the_schema():
    assert unknown_override("model.num_leavs=3").startswith("config key 'model.num_leavs'")
    assert "known: kind, n_borrowers" in unknown_override("data.n_borrower=3")
    assert unknown_override("nope.x=1").startswith("config key 'nope.x'")
    # plain keys, group choices, additions, Hydra's keys and free-form maps pass here
    for ok in (
        "model.num_leaves=7",
        "data=table",
        "+model.x=1",
        "hydra.verbose=true",
        "data.monotone.x=1",
        "simulator.closure_base.thin_file=0.1",
        "force=true",
    ):
        assert unknown_override(ok) == "", ok


def test_a_value_of_the_wrong_type_or_an_unknown_group_option_is_refused_before_hydra():
    assert unknown_override("data.n_borrowers=abc") == (
        "config key 'data.n_borrowers': the value given is not a whole number"
    )
    assert "not a whole number" in unknown_override("data.n_borrowers=1e99")
    assert "not a whole number" in unknown_override("model.num_leaves=4,abc")  # a multirun
    assert "not a number" in unknown_override("model.learning_rate=fast")
    assert "not true or false" in unknown_override("model.survival=maybe")
    assert unknown_override("model=nope") == (
        "config group 'model' has no option 'nope'; known: lightgbm"
    )
    assert "known: local, off, server" in unknown_override("tracking=nope")
    assert "chosen by the command" in unknown_override("stage=train")
    # what OmegaConf reads is not refused here: nulls, words for booleans, sweeps, lists
    for ok in (
        "explain.borrower_id=null",
        "model.survival=yes",
        "model.survival=0",
        "model.learning_rate=1e-3",
        "model.num_leaves=4,31",
        "model.n_estimators=range(10,50)",
        "features.snapshots=[12,14]",
        "data.n_borrowers=1_000",
        "experiment=regime_shift",
        "+sweep=lightgbm",
        "hydra.sweeper.n_trials=1",
    ):
        assert unknown_override(ok) == "", ok
    assert "at least 1" in unknown_override("hydra.sweeper.n_trials=0")


@pytest.mark.parametrize(
    "bad",
    [
        "data.n_borrowers=abc",
        "model=nope",
        "data.seed=1.5",
        # an added group's option, and Hydra's own groups and counts: Hydra answered
        # these with exit 1 and its config search path, or (no trial) a traceback
        "+sweep=nope",
        "hydra/launcher=nope",
        "hydra/nope=basic",
        "hydra.sweeper.n_trials=0",
        "hydra.sweeper.n_trials=-1",
        "hydra.sweeper.n_trials=two",
        # a list or a mapping where one value belongs: Hydra's exit 1 and class name
        "model.num_leaves=[1,2]",
        "data.n_borrowers={a:1}",
        "tracking.experiment=[a]",
        "features.snapshots=[12,abc]",  # an item of a list of the wrong type
    ],
)
def test_the_command_line_refuses_them_in_one_line_with_exit_2(tmp_path, bad):
    r = _cli(bad, f"paths.root={tmp_path}")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config "), r.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_log_file_and_console_hide_secrets(tmp_path):
    root = logging.getLogger()
    console = logging.StreamHandler(io.StringIO())
    root.addHandler(console)
    try:
        route_to_file(tmp_path / "pipeline.log")
        logging.getLogger("mlflow").info("View run at: http://u:%s@host:5000/#/x", SECRET)
        logging.getLogger("mlflow").info("GET /api?access_token=%s", SECRET)
        try:
            raise RuntimeError(f"cannot reach https://bob:{SECRET}@db/x")
        except RuntimeError:
            logging.getLogger("mlflow").exception("failed")
        logging.getLogger("pipeline.test").warning("uri http://u:%s@h", SECRET)
    finally:
        root.removeHandler(console)
    text = (tmp_path / "pipeline.log").read_text()
    assert "u:***@host" in text and "access_token=***" in text and "bob:***@db" in text
    assert "RuntimeError" in text  # the traceback is kept, without the secret
    assert SECRET not in text
    shown = console.stream.getvalue()
    assert "u:***@h" in shown and SECRET not in shown


def test_the_console_streams_hide_secrets_and_drop_hydras_hint():
    buf = io.StringIO()
    stream = RedactingStream(buf)
    print(f"View run at: http://u:{SECRET}@host/#/runs", file=stream)
    print(
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", file=stream
    )
    print("token=abc done", file=stream)
    text = buf.getvalue()
    assert SECRET not in text and "u:***@host" in text and "token=***" in text
    assert "HYDRA_FULL_ERROR" not in text


def test_mlflows_own_prints_go_to_the_log_file(tmp_path, capsys):
    from mlflow.utils.logging_utils import eprint

    route_to_file(tmp_path / "pipeline.log")
    eprint("Successfully registered model 'closure-risk-lgbm'.")
    eprint(f"Created version '2' of model 'm' at http://u:{SECRET}@h")
    captured = capsys.readouterr()
    assert "registered model" not in captured.err + captured.out
    text = (tmp_path / "pipeline.log").read_text()
    assert "Successfully registered model 'closure-risk-lgbm'." in text
    assert "Created version '2'" in text and SECRET not in text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("${nowhere}", "Interpolation key 'nowhere' not found"),
        ("${oc.env:NO_SUCH_VAR_X}", "NO_SUCH_VAR_X"),
    ],
)
def test_an_interpolation_that_cannot_be_resolved_is_one_line(tmp_path, value, reason):
    """Hydra resolved the overrides list itself (traceback, exit 1) before any stage ran."""
    r = _cli(f"data.n_borrowers={value}", "tracking=off", f"paths.root={tmp_path}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "Error executing job" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: config key 'data.n_borrowers': ") and reason in lines[0]
    assert not (tmp_path / "data").exists()  # nothing was simulated


def test_hydras_options_between_overrides_work_and_hide_the_secret(tmp_path):
    """``--cfg job`` typed between overrides prints the composed job (password hidden) and
    runs nothing; it used to leave the later overrides "unrecognized" (argparse, exit 2)."""
    from pipeline.__main__ import _flags_first

    assert _flags_first(["a=1", "--cfg", "job", "b=2", "-m", "--info", "c=3"]) == (
        ["--cfg", "job", "-m", "--info"],
        ["a=1", "b=2", "c=3"],
    )
    assert _flags_first(["--info", "plugins", "a=1"]) == (["--info", "plugins"], ["a=1"])
    root = tmp_path / "r"
    proc = _cli(
        "tracking.uri=http://u:s3cr3tPW@127.0.0.1:9",
        "--cfg",
        "job",
        f"paths.root={root}",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"root: {root}" in proc.stdout and "uri: http://u:***@127.0.0.1:9" in proc.stdout
    assert "s3cr3tPW" not in proc.stdout + proc.stderr
    assert not root.exists()  # the job was printed, not run
