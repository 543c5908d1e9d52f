"""The layering contract of the package, checked from the source (``make lint``).

``python -m pipeline.tools.layers [PACKAGE_DIR]`` reads every module's imports, those
inside functions included, and fails (exit 1, one line per breach) when

* a module imports from a layer above its own (see :data:`LAYERS`);
* the modules import each other in a cycle;
* a function imports a module of the package (only heavy optional third-party
  dependencies may be imported inside a function). The command line's entry
  (:data:`DEFERRED`) is the one exception: it checks the command line before it imports
  the stages, so that a refusal does not wait for the machine-learning stack. Nothing
  imports it, so its deferred imports cannot hide a cycle;
* a function is longer than :data:`MAX_LINES` lines (numba kernels excepted);
* a module other than the artifact catalog (:data:`CATALOG`) writes a catalog file name
  in a string (docstrings aside): a file is named once, in the catalog, and everything
  else asks the catalog for it. Names are read from the catalog's source: its string
  constants that look like file names, and the folders it names as entries.

It needs nothing but the standard library, so it also runs on a tree that does not
import (a half-finished change, a broken dependency).
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: Lowest first. A module may import its own layer and the layers listed before it.
#: ``tools`` and the command line sit on top, side by side.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("core",),
    ("adapters",),
    ("stages",),
    ("tools", "__main__"),
)
MAX_LINES = 100
#: the modules that may import the package's own modules inside a function
DEFERRED = ("__main__",)
#: the module that names every file of the pipeline, relative to the package
CATALOG = ("adapters", "catalog.py")
_FILE = re.compile(r"^[\w{}*/.-]+\.(parquet|json|csv|txt|md|html|yaml|png)$")
_TOKEN = re.compile(r"[\w{}*/.-]+")
_JIT = ("jit", "njit", "vectorize", "guvectorize")


@dataclass
class Module:
    name: str  # dotted, e.g. pipeline.core.metrics
    path: Path
    imports: dict[str, int] = field(default_factory=dict)  # imported module -> first line
    local_imports: list[tuple[str, int]] = field(default_factory=list)


def layer_of(name: str, package: str) -> int | None:
    """Index of the layer a dotted module name belongs to (None for the package root)."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != package:
        return None
    for i, members in enumerate(LAYERS):
        if parts[1] in members:
            return i
    return None


def _modules(pkg: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(pkg.rglob("*.py")):
        parts = f.relative_to(pkg.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _targets(node: ast.Import | ast.ImportFrom, cur: str, is_pkg: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = cur.split(".") if is_pkg else cur.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, base] if base else parts)
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def read_modules(pkg: Path) -> dict[str, Module]:
    known = _modules(pkg)
    mods = {n: Module(n, p) for n, p in known.items()}
    for name, mod in mods.items():
        tree = ast.parse(mod.path.read_text(encoding="utf-8"), filename=str(mod.path))
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        inside = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            hits = {
                r
                for t in _targets(node, name, mod.path.name == "__init__.py")
                if (r := _resolve(t, known)) and r != name
            }
            for hit in hits:
                mod.imports.setdefault(hit, node.lineno)
                if id(node) in inside:
                    mod.local_imports.append((hit, node.lineno))
    return mods


def _cycles(mods: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in mods:
        if root in index:
            continue
        work = [(root, iter(sorted(mods[root].imports)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(mods[w].imports))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _long_functions(mod: Module) -> list[str]:
    tree = ast.parse(mod.path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            n = node.end_lineno - node.lineno + 1
            decos = " ".join(ast.unparse(d) for d in node.decorator_list)
            if n > MAX_LINES and not any(j in decos for j in _JIT):
                out.append(f"{mod.path}:{node.lineno}: function '{node.name}' has {n} lines")
    return out


def _text(node: ast.AST) -> str | None:
    """A string constant, or an f-string with ``*`` for each interpolated value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "*"
            for v in node.values
        )
    return None


def _strings(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """Every string of a module but its docstrings (f-strings whole, not their parts)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if body and isinstance(body[0], ast.Expr) and _text(body[0].value) is not None:
                skip.add(id(body[0].value))
        if isinstance(node, ast.JoinedStr):  # its text parts; strings inside {...} count
            skip.update(id(v) for v in node.values if isinstance(v, ast.Constant))
            skip.update(
                id(f.format_spec)
                for f in node.values
                if isinstance(f, ast.FormattedValue) and f.format_spec is not None
            )
    out = []
    for node in ast.walk(tree):
        if id(node) not in skip and (t := _text(node)) is not None:
            out.append((node, t))
    return out


def catalog_names(pkg: Path) -> tuple[list[str], list[str]]:
    """The file names (as globs: ``*`` for a family's field) and the folder names that
    the catalog module of ``pkg`` declares; empty when the package has no catalog."""
    path = pkg.joinpath(*CATALOG)
    if not path.exists():
        return [], []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    files, folders = set(), set()
    for _, t in _strings(tree):
        # a leading "_" is a stage's own bookkeeping (its manifest), not a catalog file
        if _FILE.match(t) and not t.startswith("_"):
            files.add(re.sub(r"\{[^}]*\}", "*", t))
    for node in ast.walk(tree):  # entries declared as _e(name, folder, relpath, ...)
        if isinstance(node, ast.Call) and len(node.args) >= 3:
            rel = _text(node.args[2])
            if rel and "." not in rel.rsplit("/", 1)[-1] and "*" not in rel and "{" not in rel:
                folders.add(rel)
    return sorted(files), sorted(folders)


def _names_a_file(token: str, files: list[str]) -> str | None:
    """The catalog file ``token`` names (a concrete name, or a family's very glob)."""
    token = token.rstrip(".")
    tail = token.rsplit("/", 1)[-1]
    for f in files:
        base = f.rsplit("/", 1)[-1]
        if base.startswith("*."):  # a family told apart by its folder only
            base = f
        for t in {token, tail}:
            if t in (f, base) or ("*" not in t and fnmatch.fnmatchcase(t, base)):
                return f
    return None


def _literal_names(mod: Module, files: list[str], folders: list[str]) -> list[str]:
    tree = ast.parse(mod.path.read_text(encoding="utf-8"))
    joined = {
        id(side)
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        for side in (node.left, node.right)
    }
    out = []
    for node, t in _strings(tree):
        hits = {f for tok in _TOKEN.findall(t) if (f := _names_a_file(tok, files))}
        hits |= {d for d in folders if t.startswith(d + "/") or (t == d and id(node) in joined)}
        for hit in sorted(hits):
            out.append(
                f"{mod.path}:{getattr(node, 'lineno', 0)}: names the catalog's file "
                f"'{hit}' in {t!r} (ask the catalog: Catalog.path / read / write)"
            )
    return out


def check(pkg: Path) -> list[str]:
    """Every breach of the contract in the package at ``pkg``, one message each."""
    package = pkg.name
    mods = read_modules(pkg)
    files, folders = catalog_names(pkg)
    problems: list[str] = []
    for mod in mods.values():
        mine = layer_of(mod.name, package)
        for target, line in sorted(mod.imports.items()):
            theirs = layer_of(target, package)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(
                    f"{mod.path}:{line}: {mod.name} ({'/'.join(LAYERS[mine])}) imports "
                    f"{target} ({'/'.join(LAYERS[theirs])}), a higher layer"
                )
        deferred = mod.name.split(".", 1)[-1] in DEFERRED
        for target, line in [] if deferred else mod.local_imports:
            problems.append(
                f"{mod.path}:{line}: {mod.name} imports {target} inside a function "
                "(import the package's own modules at module level)"
            )
        problems.extend(_long_functions(mod))
        if mod.path.resolve() != pkg.joinpath(*CATALOG).resolve():
            problems.extend(_literal_names(mod, files, folders))
    for comp in _cycles(mods):
        problems.append("import cycle: " + " -> ".join(comp))
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    pkg = Path(args[0] if args else Path(__file__).resolve().parents[1]).resolve()
    problems = check(pkg)
    for p in problems:
        print(p)
    n = len(read_modules(pkg))
    print(f"layers: {n} modules, {len(problems)} breach(es) of the contract", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
