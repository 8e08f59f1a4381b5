"""The house rules of lit_align, measured on its source (``ast``), not on its behaviour.

- no import circle between modules of ``lit_align/``;
- layers point one way (bottom to top: base types → models → scorers → objectives → data and
  callbacks → methods → cli; a module imports its own floor or lower floors only);
- no private Lightning name (``trainer._x``, ``._trainer``, an overridden private hook) outside
  ``lit_align/lightning_private.py``;
- no module over 300 lines, no function over 60;
- no citation of the internal ``methods.md`` / ``design.md`` / ``offline.md`` (docstrings,
  README, docs, configs): cite the papers;
- shipped configs are named ``<method>_<task>[_<variant>].yaml``.

A rule that does not hold yet lists its offenders in ``KNOWN``: ``test_<rule>`` fails on any
*new* offender, and ``test_<rule>_done`` (strict xfail) starts failing once every known offender
is fixed: then empty its ``KNOWN`` entry and remove the mark.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lit_align"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60
PRIVATE_FILE = "lit_align.lightning_private"

# floors, bottom first; a module's floor is that of its longest listed prefix
FLOORS = [
    ["lit_align.errors", "lit_align.renames", "lit_align.contexts", "lit_align.lightning_private", "lit_align.masked",
     "lit_align.distributed", "lit_align.rng_state", "lit_align.timing", "lit_align.memory", "lit_align.schedules"],
    # the LM itself (engine, loading, sampling, log-probs): LM-based scorers run one
    ["lit_align.models"],
    ["lit_align.scorers"],
    ["lit_align.targets", "lit_align.losses", "lit_align.f_divergences", "lit_align.estimators", "lit_align.rl",
     "lit_align.preference", "lit_align.phf_losses", "lit_align.samplers", "lit_align.moment_matching",
     "lit_align.phf_objectives", "lit_align.export", "lit_align.model_card"],
    # beside the methods: they serve them and never import them
    ["lit_align.data", "lit_align.callbacks"],
    ["lit_align.methods"],
    ["lit_align.cli", "lit_align.cli_hints", "lit_align.cli_checks", "lit_align.cli_errors", "lit_align.cli_extras",
     "lit_align.__main__", "lit_align.predict"],
]

# today's offenders (helpers core / offline / errors fix them; then empty the entry)
KNOWN = {
    "circles": set(),
    "upward": set(),
    "private": set(),
    "long_modules": set(),
    "long_functions": set(),
    "internal_citations": set(),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@lru_cache(maxsize=None)
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def _reexports(package: str) -> dict[str, str]:
    """``name -> defining module`` for the ``from lit_align.x import name`` lines of a package."""
    out = {}
    for node in tree(package).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lit_align"):
            for alias in node.names:
                out[alias.asname or alias.name] = node.module
    return out


def _resolve(module: str, name: str | None = None) -> str | None:
    """The lit_align module an import refers to (a re-exported name: its defining module)."""
    mods = modules()
    if name is not None and f"{module}.{name}" in mods:
        return f"{module}.{name}"
    if module in mods and name is not None and mods[module].name == "__init__.py":
        target = _reexports(module).get(name)
        if target and target != module:
            return _resolve(target)
    while module and module not in mods:
        module = module.rpartition(".")[0]
    return module or None


def _type_checking_nodes(mod: ast.Module) -> set[int]:
    skip = set()
    for node in ast.walk(mod):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


@lru_cache(maxsize=None)
def imports() -> dict[str, set[str]]:
    """Module -> the lit_align modules it imports (at module level or inside functions)."""
    graph = {}
    for name in modules():
        mod = tree(name)
        skip = _type_checking_nodes(mod)
        out = set()
        for node in ast.walk(mod):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lit_align"):
                out |= {_resolve(node.module, a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {_resolve(a.name) for a in node.names if a.name.startswith("lit_align")}
        graph[name] = {m for m in out if m and m != name}
    return graph


def floor(name: str) -> int | None:
    best, level = -1, None
    for i, prefixes in enumerate(FLOORS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    return level


# ------------------------------------------------------------------ offenders of each rule
def circles() -> set[str]:
    """Each import circle (strongly connected component of more than one module), sorted."""
    graph, index, low, stack, on, out = imports(), {}, {}, [], set(), set()

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.add(" <-> ".join(sorted(scc)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward_imports() -> set[str]:
    out = set()
    for name, targets in imports().items():
        here = floor(name)
        for target in targets:
            there = floor(target)
            if here is not None and there is not None and there > here:
                out.add(f"{name} -> {target}")
    return out


_LOOP_INTERNALS = {"epoch_loop", "manual_optimization", "optim_step_progress", "_data_fetcher",
                   "_should_check_val_fx", "_batches_that_stepped"}


def _private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def _chain(node: ast.AST) -> list[str]:
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return names[::-1]


def _overrides_private_hook(name: str, cls_name: str, method: str) -> bool:
    """Whether ``method`` of class ``cls_name`` in module ``name`` overrides a Lightning private."""
    try:
        cls = getattr(importlib.import_module(name), cls_name)
    except Exception:  # a class built in a function, or a module that needs an optional package
        return False
    for base in inspect.getmro(cls)[1:]:
        if base.__module__.split(".")[0] in ("lightning", "pytorch_lightning") and method in vars(base):
            return True
    return False


def private_lightning() -> set[str]:
    found: dict[str, set[str]] = {}  # "module:line" -> offending expressions on that line

    def add(where: str, what: str) -> None:
        found.setdefault(where, set()).add(what)

    for name in modules():
        if name == PRIVATE_FILE:
            continue
        for node in ast.walk(tree(name)):
            where = f"{name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute):
                chain = _chain(node)
                if node.attr == "_trainer" or node.attr in _LOOP_INTERNALS or (_private(node.attr) and "trainer" in chain[:-1]):
                    add(where, ".".join(chain))
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
                key = node.args[1] if len(node.args) > 1 else None
                if isinstance(key, ast.Constant) and key.value in ({"_trainer"} | _LOOP_INTERNALS):
                    add(where, f"getattr(..., {key.value!r})")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("lightning", "pytorch_lightning"):
                for alias in node.names:
                    if _private(alias.name) or any(_private(p) for p in node.module.split(".")):
                        add(where, f"import {node.module}.{alias.name}")
            elif isinstance(node, ast.ClassDef) and node.bases:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and _private(item.name) \
                            and _overrides_private_hook(name, node.name, item.name):
                        add(f"{name}:{item.lineno}", f"{node.name}.{item.name} overrides a Lightning private")
    # one entry per expression (a.b._c.d also matches as a.b._c: keep the longest), keyed
    # without line numbers, so that edits elsewhere in a file do not change the keys
    out = set()
    for where, whats in found.items():
        out |= {f"{where.partition(':')[0]}: {w}" for w in whats if not any(o != w and o.startswith(w + ".") for o in whats)}
    return out


def long_modules() -> set[str]:
    out = set()
    for name, path in modules().items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            out.add(name)
    return out


def long_functions() -> set[str]:
    out = set()
    for name in modules():
        for node in ast.walk(tree(name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.add(f"{name}.{node.name}")
    return out


_INTERNAL = re.compile(r"\b(methods|design|offline)\.md\b")


def internal_citations() -> set[str]:
    """Files that cite the internal spec: lit_align sources, README, docs, configs, benchmarks."""
    files = [*PACKAGE.rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *PACKAGE.rglob("*.md"),
             *PACKAGE.rglob("*.yaml"), *(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.md"),
             *(ROOT / "tests").rglob("*.py")]
    out = set()
    for path in files:
        if not path.is_file() or path.name == Path(__file__).name:
            continue
        if _INTERNAL.search(path.read_text(encoding="utf-8")):
            out.add(str(path.relative_to(ROOT)))
    return out


RULES = {
    "circles": circles,
    "upward": upward_imports,
    "private": private_lightning,
    "long_modules": long_modules,
    "long_functions": long_functions,
    "internal_citations": internal_citations,
}


def _done(rule: str):
    known = KNOWN[rule]
    mark = pytest.mark.xfail(strict=True, reason=f"{len(known)} known offenders: " + "; ".join(sorted(known)))
    return pytest.param(rule, marks=mark) if known else rule


@pytest.mark.parametrize("rule", sorted(RULES))
def test_no_new_offenders(rule):
    new = RULES[rule]() - KNOWN[rule]
    assert not new, f"house rule {rule!r} broken by: " + "; ".join(sorted(new))


@pytest.mark.parametrize("rule", [_done(r) for r in sorted(RULES)])
def test_rule_holds(rule):
    offenders = RULES[rule]()
    assert not offenders, f"house rule {rule!r} broken by: " + "; ".join(sorted(offenders))


def test_every_module_has_a_floor():
    assert [m for m in modules() if m != "lit_align" and floor(m) is None] == []


PLANTED = {
    "__init__.py": "",
    "scorers/__init__.py": "",
    "scorers/a.py": "from lit_align.methods.b import x\n",  # upward (scorers -> methods) and a circle
    "methods/__init__.py": "",
    "methods/b.py": ("from lit_align.scorers.a import y\n"
                     "def f(self, trainer):\n    \"See methods.md, section 7.\"\n"
                     "    return self._trainer, trainer._data_fetcher, getattr(trainer, '_trainer')\n"
                     + "def g():\n" + "    pass\n" * MAX_FUNCTION_LINES),
    "models/__init__.py": "\n" * MAX_MODULE_LINES + "x = 1\n",
}


def test_the_checks_find_planted_offences(tmp_path, monkeypatch):
    """Each detector finds what was planted in a fake package (an empty result means something)."""
    for rel, text in PLANTED.items():
        path = tmp_path / "lit_align" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "ROOT", tmp_path)
    monkeypatch.setattr(here, "PACKAGE", tmp_path / "lit_align")
    for cached in (modules, tree, imports):
        cached.cache_clear()
    try:
        assert circles() == {"lit_align.methods.b <-> lit_align.scorers.a"}
        assert upward_imports() == {"lit_align.scorers.a -> lit_align.methods.b"}
        assert private_lightning() == {"lit_align.methods.b: self._trainer", "lit_align.methods.b: trainer._data_fetcher",
                                       "lit_align.methods.b: getattr(..., '_trainer')"}
        assert long_functions() == {"lit_align.methods.b.g"}
        assert long_modules() == {"lit_align.models"}
        assert internal_citations() == {"lit_align/methods/b.py"}
    finally:
        for cached in (modules, tree, imports):
            cached.cache_clear()


# ------------------------------------------------------------------ config names
METHODS = ("dpg", "fdpg", "cdpg", "dpo", "pmle", "pref_distill", "reward_model", "phf", "ppo", "reinforce",
           "rlkl", "rloo", "rkl", "qrs")
SNIPPETS = ("strategies", "samplers")
_CONFIG = re.compile(rf"^({'|'.join(METHODS)})_[a-z0-9]+(_[a-z0-9]+)*\.yaml$")


def test_config_names_follow_the_scheme():
    configs = [p for p in (PACKAGE / "configs").rglob("*.yaml") if p.relative_to(PACKAGE / "configs").parts[0] not in SNIPPETS]
    bad = [str(p.relative_to(PACKAGE)) for p in configs if p.name != "quickstart.yaml" and not _CONFIG.match(p.name)]
    assert configs and bad == [], "<method>_<task>[_<variant>].yaml: " + ", ".join(bad)
