"""The layering contract: the real package honours it, and the check catches breaches."""

from __future__ import annotations

from pathlib import Path

from pipeline.base.config import REPO_ROOT
from pipeline.tools import layers


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for sub in ("", "base", "core", "adapters", "stages", "tools"):
        (pkg / sub / "__init__.py").parent.mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").touch()
    return pkg


CLEAN = {
    "base/io.py": "X = 1\n",
    "core/metrics.py": "from pkg.base.io import X\n",
    "adapters/tracking.py": "from pkg.core import metrics\n",
    "stages/train.py": "from pkg.adapters.tracking import metrics\n",
}


def test_the_package_honours_the_contract() -> None:
    assert layers.check(REPO_ROOT / "pipeline") == []


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert layers.check(_package(tmp_path, CLEAN)) == []
    assert layers.main([str(tmp_path / "pkg")]) == 0


def test_a_core_module_importing_an_adapter_fails(tmp_path: Path) -> None:
    files = {**CLEAN, "core/metrics.py": "from pkg.adapters import tracking\n"}
    problems = layers.check(_package(tmp_path, files))
    assert any("pkg.core.metrics (core) imports pkg.adapters.tracking" in p for p in problems)
    assert layers.main([str(tmp_path / "pkg")]) == 1


def test_a_function_local_upward_import_is_caught_too(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "base/io.py": "def f():\n    from pkg.stages import train\n    return train\n",
    }
    problems = layers.check(_package(tmp_path, files))
    assert any("(base) imports pkg.stages.train" in p for p in problems)
    assert any("inside a function" in p for p in problems)
    # base -> stages -> adapters -> core -> base closes a loop through the local import
    assert any(p.startswith("import cycle:") for p in problems)


def test_only_the_command_line_entry_may_defer_an_import_of_the_package(tmp_path: Path) -> None:
    deferred = "def main():\n    from pkg.stages import train\n    return train\n"
    files = {**CLEAN, "__main__.py": deferred, "tools/cli.py": deferred}
    problems = layers.check(_package(tmp_path, files))
    local = [p for p in problems if "inside a function" in p]
    assert local and all(p.startswith(f"{tmp_path / 'pkg' / 'tools' / 'cli.py'}:2:") for p in local)
    assert any("pkg.tools.cli imports pkg.stages.train inside a function" in p for p in local)


def test_long_functions_fail_unless_jit(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(layers.MAX_LINES))
    files = {
        **CLEAN,
        "core/long.py": f"def slow():\n{body}\n\n@njit(cache=True)\ndef kernel():\n{body}",
    }
    problems = layers.check(_package(tmp_path, files))
    assert [p for p in problems if "has" in p and "lines" in p] == [
        f"{tmp_path / 'pkg' / 'core' / 'long.py'}:1: function 'slow' has "
        f"{layers.MAX_LINES + 1} lines"
    ]


CATALOG = (
    "def _e(name, folder, relpath):\n    return relpath\n\n"
    'ENTRIES = [_e("model", "models", "model.txt"), _e("plots", "models", "plots"),\n'
    '           _e("story", "models", "borrower_{id}.json")]\n'
)


def test_a_catalog_file_name_outside_the_catalog_fails(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "adapters/catalog.py": CATALOG,
        "stages/train.py": (
            '"""Writes model.txt (a docstring may say so)."""\n'
            "from pkg.adapters import catalog\n\n"
            "def out(models, bid):\n"
            '    return models / "model.txt", models / "plots", models / f"borrower_{bid}.json"\n'
            "\n"
            "def say(meta):\n"
            "    return f\"e.g. {meta.get('path', 'model.txt')}\"\n"
        ),
    }
    problems = layers.check(_package(tmp_path, files))
    named = [p for p in problems if "names the catalog's file" in p]
    assert len(named) == 4, problems
    assert any("'model.txt'" in p and "train.py:5" in p for p in named)
    assert any("'plots'" in p for p in named)
    assert any("'borrower_*.json'" in p for p in named)
    assert any("'model.txt'" in p and "train.py:8" in p for p in named)  # inside an f-string
    assert layers.main([str(tmp_path / "pkg")]) == 1


def test_the_catalog_itself_and_other_words_pass(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "adapters/catalog.py": CATALOG,
        # "plots" as a word (not a path) and a name merely ending like a catalog file
        "stages/train.py": 'TITLE = "plots"\nNAME = "my_model.txt.bak"\n',
    }
    assert layers.check(_package(tmp_path, files)) == []
