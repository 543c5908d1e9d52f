from __future__ import annotations

import subprocess
import sys
from dataclasses import is_dataclass
from typing import get_type_hints

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline.base.config import REPO_ROOT, Config, ConfigError, validate


def test_default_config_composes_and_validates(make_cfg):
    cfg = make_cfg(small=False)
    validate(cfg)
    assert cfg.data.n_borrowers == 20_000
    assert cfg.tracking.uri.startswith("sqlite:///") and cfg.tracking.uri.endswith("/mlflow.db")
    assert str(cfg.paths.root) in cfg.tracking.uri


def test_misspelt_key_fails_naming_it(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("model.num_leavs=3")
    assert "num_leavs" in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.n_borrowers=-5", "data.n_borrowers"),
        ("data.n_borrowers=0", "data.n_borrowers"),
        ("simulator.draw_prob=1.5", "simulator.draw_prob"),
        ("simulator.stop_shock_rate=-0.1", "simulator.stop_shock_rate"),
        ("+simulator.closure_base.made_up_cause=0.1", "simulator.closure_base.made_up_cause"),
        ("simulator.closure_base.thin_file=-1", "simulator.closure_base.thin_file"),
        ("simulator.tightening_month=40", "simulator.tightening_month"),
        ("features.snapshots=[12,40]", "features.snapshots"),
        ("model.learning_rate=0", "model.learning_rate"),
        # these used to end in a traceback inside the simulator or LightGBM
        ("simulator.community_size=0", "simulator.community_size"),
        ("model.min_child_samples=-5", "model.min_child_samples"),
        ("model.max_bin=1", "model.max_bin"),
        ("simulator.ext_close_rate=0.8", "simulator.ext_close_rate"),
        # these used to run and silently give a different world or model
        ("simulator.signup_spread=-5", "simulator.signup_spread"),
        ("simulator.over_util=-3", "simulator.over_util"),
        ("simulator.policy_util=7", "simulator.policy_util"),
        ("model.objective=regression", "model.objective"),
        ("simulator.draw_prob=nan", "simulator.draw_prob"),
        ("simulator.daily_rate=inf", "simulator.daily_rate"),
        ("policy.horizon=12", "policy.horizon"),
        # enumerated and formatted strings
        ("engine.memory_limit=lots", "engine.memory_limit"),
        ("engine.kind=spark", "engine.kind"),
        ("simulator.oracle_estimator=guess", "simulator.oracle_estimator"),
        ("explain.reference=median", "explain.reference"),
        ("bench.rows=[generate,speed]", "bench.rows"),
        ("model.champion_alias='best model'", "model.champion_alias"),
        ("model.promote_alpha=0", "model.promote_alpha"),
        ("model.promote_alpha=1.5", "model.promote_alpha"),
        ("tracking.experiment=''", "tracking.experiment"),
        ("data.n_jobs=-1", "data.n_jobs"),
        # these used to exit 0 with a wrong result
        ("features.snapshots=[12,14,14,16,18,20,24,26,30,32]", "features.snapshots"),
        ("features.valid_snapshots=[24,24]", "features.valid_snapshots"),
        ("features.oot_snapshots=[30,30]", "features.oot_snapshots"),
        ("features.valid_snapshots=[]", "features.valid_snapshots"),
        ("score.tier_names=[a,a,b]", "score.tier_names"),
        ("model.calibration_bins=100000", "model.calibration_bins"),
        ("+model.num_leave=7", "model.num_leave"),
        ("+model.scorecard.bins=4", "model.scorecard.bins"),
        ("model.scorecard.max_features=0", "model.scorecard.max_features"),
        ("model.scorecard.max_vif=0.5", "model.scorecard.max_vif"),
        ("model.scorecard.max_corr=0", "model.scorecard.max_corr"),
        ("model.scorecard.bin_pvalue=0", "model.scorecard.bin_pvalue"),
        ("model.scorecard.enter_pvalue=2", "model.scorecard.enter_pvalue"),
        ("model.scorecard.min_bin_share=0.7", "model.scorecard.min_bin_share"),
        ("+seed=7", "seed"),
    ],
)
def test_bad_values_are_refused_naming_the_key(make_cfg, override, key):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value)


def test_added_unknown_key_is_refused_listing_the_known_ones(make_cfg):
    """``+`` adds a key to the struct config; validate refuses it, its value unsaid."""
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("+tracking.api_token=s3cret-value"))
    msg = str(err.value)
    assert "'tracking.api_token'" in msg and "not a known key of group 'tracking'" in msg
    assert "known: enabled, uri, artifact_root" in msg
    assert "s3cret-value" not in msg  # an unknown key may hold a secret


def test_repeated_items_are_named(make_cfg):
    with pytest.raises(ConfigError, match=r"lists the tier name a more than once"):
        validate(make_cfg("score.tier_names=[a,a,b]"))
    with pytest.raises(ConfigError, match=r"lists the month 14 more than once"):
        validate(make_cfg("features.snapshots=[12,14,14,16,18,20,24,26,30,32]"))


def test_cli_misspelt_override_exits_with_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "model.num_leavs=3", f"paths.root={tmp_path}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "num_leavs" in proc.stderr
    assert not (tmp_path / "data" / "raw").exists()


def test_cli_bad_value_exits_before_work(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "generate",
            "data.n_borrowers=-5",
            f"paths.root={tmp_path}",
            "tracking=off",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "data.n_borrowers" in proc.stderr
    assert not (tmp_path / "data" / "raw").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=tightening"],
        ["experiment=competition_heavy"],
        ["experiment=regime_shift"],
        # no out-of-time split: the later snapshots must go too, or they would be
        # training rows after the validation ones
        ["features.snapshots=[12,14,16,18,20,24,26]", "features.oot_snapshots=[]"],
        ["data=table", "data.path=x.csv", "data.target=y"],
        ["engine=dask", "engine.memory_limit=500 MB"],
        ["simulator.ext_close_rate=0.5", "model.early_stopping_rounds=0", "explain.snapshot=30"],
        # free-form mappings take keys of their own (their group's check reads them)
        ["data=table", "data.path=x.csv", "data.target=y", "+data.monotone.income=-1"],
        ["model.calibration_bins=1000"],
    ],
)
def test_shipped_presets_and_edge_values_pass(make_cfg, overrides):
    validate(make_cfg(*overrides))


def test_generation_uses_every_core_only_for_large_worlds(make_cfg):
    from pipeline.base.config import PARALLEL_WORLD, generation_jobs, physical_cores

    assert generation_jobs(make_cfg("data.n_borrowers=2000").data) == 1  # a test world
    assert generation_jobs(make_cfg("data.n_borrowers=20000").data) == physical_cores()
    big = make_cfg(f"data.n_borrowers={PARALLEL_WORLD}").data
    assert generation_jobs(big) == physical_cores()
    assert (
        generation_jobs(make_cfg(f"data.n_borrowers={PARALLEL_WORLD}", "data.n_jobs=1").data) == 1
    )
    assert generation_jobs(make_cfg("data.n_jobs=3").data) == 3


def test_every_group_has_its_check():
    from pipeline.base import config

    hints = get_type_hints(config.Config)
    groups = {name for name, kind in hints.items() if is_dataclass(kind)}
    # paths holds free-form folder names; every other group is checked by validate
    assert {name for name, _ in config.GROUP_CHECKS} == groups - {"paths"}


def _yaml_values(
    node: object, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], object]]:
    """Every leaf of a YAML mapping, with its key path (a list is one value)."""
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _yaml_values(v, (*prefix, str(k)))]
    return [(prefix, node)]


def _conf_values() -> list[tuple[str, tuple[str, ...], object]]:
    """(file, key path in the composed config, value) of every value in ``conf/``.

    A group file's keys live under its group unless it says ``# @package _global_``;
    the defaults list and Hydra's own settings are not config values.
    """
    conf = REPO_ROOT / "conf"
    out = []
    for path in sorted(conf.rglob("*.yaml")):
        rel = path.relative_to(conf)
        text = path.read_text()
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
        assert isinstance(node, dict), f"{rel}: not a mapping"
        node.pop("defaults", None)
        node.pop("hydra", None)
        package = () if len(rel.parts) == 1 or "@package _global_" in text else (rel.parts[0],)
        out += [(str(rel), (*package, *key), value) for key, value in _yaml_values(node)]
    return out


def test_no_yaml_value_repeats_its_dataclass_default():
    defaults = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)
    found = _conf_values()
    assert found, "conf/ holds no values at all"
    repeats = []
    for rel, key, value in found:
        node: object = defaults
        for part in key:
            assert isinstance(node, dict) and part in node, (
                f"conf/{rel}: {'.'.join(key)} is not a key of pipeline/base/config.py:Config"
            )
            node = node[part]
        if node == value:
            repeats.append(f"conf/{rel}: {'.'.join(key)} = {value!r}")
    assert not repeats, (
        "these YAML values repeat the dataclass default (pipeline/base/config.py), so a "
        "change of the default would be silently overridden; remove them:\n" + "\n".join(repeats)
    )


def test_the_repeat_check_sees_group_and_global_values():
    # the walk above must reach a group file's keys and a global preset's keys
    found = {(rel, ".".join(key)) for rel, key, _ in _conf_values()}
    assert ("tracking/off.yaml", "tracking.enabled") in found
    assert ("experiment/tightening.yaml", "simulator.tightening_strength") in found
    assert (
        "experiment/competition_heavy.yaml",
        "simulator.closure_base.low_activity_competition",
    ) in found


def test_idle_cores_leaves_out_the_cpus_other_work_keeps_busy(monkeypatch):
    import psutil

    from pipeline.base import config

    monkeypatch.setattr(config, "physical_cores", lambda: 4)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4)
    for percent, idle in ((0.0, 4), (25.0, 3), (60.0, 2), (100.0, 1)):
        monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None, p=percent: p)
        assert config.idle_cores() == idle, percent
