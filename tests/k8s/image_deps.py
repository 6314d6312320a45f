"""What each image installs, and what its steps import: a static check (tests/k8s/test_images.py).

Docker is not available here, and a fresh venv per image is too slow for CI, so both sides are derived
without building anything:

* **installed**: the final stage of images/<kind>/Dockerfile: ``install.sh torch``, ``install.sh cai
  [--extras E] [--no-deps]`` (the cai wheel with pyproject.toml's dependencies and those extras),
  ``pip install -r <file>`` (a requirements file COPYed in), and the base image's own distributions
  (``LABEL cai.base-provides="..."``); closed over each distribution's requirements as installed here
  (``importlib.metadata``);
* **imported**: the modules a step of that image reaches from its component (components/<stage>.py), its
  adapter (cai_core/runtime/adapters.py) and the image's commands, by an AST scan. Module-level imports
  are always followed; the imports inside functions are followed for modules a step *enters* (its
  component's function, its adapter, the modules those import lazily, and the module-level imports of
  an entered module). The HUBS are only loaded (their module-level imports), since they import every
  stage for its config class or adapter. An import under ``try: ... except ImportError`` is optional.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"cai_core": ROOT / "cai_core", "cai_components": ROOT / "components", "cai_pipelines": ROOT / "pipelines"}
#: Modules imported for their definitions (every stage's config class, every step's adapter): a step enters
#: only its own adapter.
HUBS = frozenset({"cai_core.config.run", "cai_core.runtime.adapters"})


# -- what an image installs ------------------------------------------------------------------------

def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def cai_requirements(extras: tuple[str, ...] = ()) -> list[Requirement]:
    """pyproject.toml's dependencies plus those of `extras` (a self-reference cai[x] expands x)."""
    proj = project()
    out = [Requirement(r) for r in proj["dependencies"]]
    for extra in extras:
        for text in proj["optional-dependencies"][extra]:
            req = Requirement(text)
            out += cai_requirements(tuple(req.extras)) if canonicalize_name(req.name) == "cai" else [req]
    return out


def closure(reqs: list[Requirement]) -> set[str]:
    """The canonical names of `reqs` and of everything they require, as installed in this environment."""
    seen: set[str] = set()
    todo = [(r, ()) for r in reqs]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
            continue
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not installed here (a base image's own distribution): its name alone
        todo += [(Requirement(r), tuple(req.extras)) for r in requires]
    return {n for n in seen if "[" not in n}


@dataclass
class Image:
    kind: str
    #: Canonical distribution names the image installs (closure).
    installed: set[str] = field(default_factory=set)
    #: Modules the Dockerfile's smoke test (`install.sh check ...`) imports.
    checked: list[str] = field(default_factory=list)
    #: The distributions the base image brings (LABEL cai.base-provides).
    base: list[str] = field(default_factory=list)
    #: Extras of the cai wheel; None when it is installed with --no-deps.
    extras: tuple[str, ...] | None = None


def _runs(final_stage: str) -> list[list[str]]:
    """The shell commands of the RUN instructions, split at && (continuations joined)."""
    text = final_stage.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if line.startswith("RUN "):
            commands += [shlex.split(part) for part in line[4:].split("&&")]
    return commands


def image(kind: str) -> Image:
    text = (ROOT / "images" / kind / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    copies = {dst: src for src, dst in re.findall(r"^COPY (?!--from)(\S+) (\S+)$", final, re.M)}
    img = Image(kind)
    label = re.search(r'^LABEL cai\.base-provides="([^"]*)"', final, re.M)
    img.base = label.group(1).split() if label else []
    reqs: list[Requirement] = [Requirement(name) for name in img.base]
    for argv in _runs(final):
        argv = [a for a in argv if not a.startswith("--mount=")]
        if "install.sh" in " ".join(argv[:2]):
            step, args = argv[2] if argv[0] == "sh" else argv[1], argv[3:] if argv[0] == "sh" else argv[2:]
            if step == "torch":
                reqs.append(Requirement("torch"))
            elif step == "cai":
                extras = tuple(args[args.index("--extras") + 1].split(",")) if "--extras" in args else ()
                img.extras = None if "--no-deps" in args else extras
                if img.extras is not None:
                    reqs += cai_requirements(img.extras)
            elif step == "check":
                img.checked = args
        elif "pip" in argv and "install" in argv:
            for i, arg in enumerate(argv):
                if arg == "-r":
                    path = copies.get(argv[i + 1])
                    assert path, f"{kind}: -r {argv[i + 1]} is not COPYed from the repository"
                    reqs += requirements_file(ROOT / path)
    img.installed = closure(reqs)
    return img


def requirements_file(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


# -- what the steps import -------------------------------------------------------------------------

def module_path(name: str) -> Path | None:
    top, *rest = name.split(".")
    base = PACKAGES.get(top)
    if base is None:
        return None
    path = base.joinpath(*rest)
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


@dataclass
class Parsed:
    module_level: list[tuple[str, bool]]  # (module, optional)
    functions: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    calls: dict[str, set[str]] = field(default_factory=dict)  # top-level function -> top-level functions it calls


def _optional(handlers: list[ast.ExceptHandler]) -> bool:
    names = []
    for h in handlers:
        names += h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def _imports(node: ast.AST, modname: str, is_pkg: bool, *, into_defs: bool, optional: bool = False,
             out: list | None = None) -> list[tuple[str, bool]]:
    out = [] if out is None else out
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and not into_defs:
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.Import):
            out += [(a.name, optional) for a in child.names]
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                parts = modname.split(".")
                base = (parts if is_pkg else parts[:-1])[:len(parts) - child.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([child.module] if child.module else []))
            else:
                mod = child.module or ""
            out.append((mod, optional))
            out += [(f"{mod}.{a.name}", optional) for a in child.names if module_path(f"{mod}.{a.name}")]
        elif isinstance(child, ast.Try):
            body = ast.Module(body=child.body, type_ignores=[])
            _imports(body, modname, is_pkg, into_defs=into_defs, optional=optional or _optional(child.handlers),
                     out=out)
            for part in (*child.handlers, ast.Module(body=child.orelse + child.finalbody, type_ignores=[])):
                _imports(part, modname, is_pkg, into_defs=into_defs, optional=optional, out=out)
        else:
            _imports(child, modname, is_pkg, into_defs=into_defs, optional=optional, out=out)
    return out


_PARSED: dict[str, Parsed] = {}


def parse(name: str) -> Parsed:
    if name not in _PARSED:
        path = module_path(name)
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        parsed = Parsed(_imports(tree, name, is_pkg, into_defs=False))
        top = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for node in tree.body:
            defs = [node] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else (
                [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                if isinstance(node, ast.ClassDef) else [])
            for fn in defs:
                key = fn.name if fn is node else f"{node.name}.{fn.name}"
                parsed.functions[key] = _imports(fn, name, is_pkg, into_defs=True)
                parsed.calls[key] = {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call)
                                     and isinstance(c.func, ast.Name) and c.func.id in top}
        _PARSED[name] = parsed
    return _PARSED[name]


def third_party_imports(entries: list[str]) -> dict[str, list[str]]:
    """Top-level third-party modules reached from `entries` ('pkg.module' entered, or 'pkg.module:function'),
    each with the chain of modules/functions that reaches it first."""
    found: dict[str, list[str]] = {}
    state: dict[str, str] = {}
    todo: list[tuple[str, str, list[str]]] = []

    def local(name: str, how: str, via: list[str]) -> None:
        if name in HUBS:
            how = "loaded"
        if state.get(name) in ("entered", how):
            return
        state[name] = how
        todo.append((name, how, via))

    def add(name: str, how: str, via: list[str], optional: bool) -> None:
        top = name.split(".")[0]
        if top in PACKAGES:
            parts = name.split(".")
            for i in range(1, len(parts)):
                if module_path(".".join(parts[:i])):
                    local(".".join(parts[:i]), "loaded", via)
            if module_path(name):
                local(name, how, via)
        elif not (optional or top in sys.stdlib_module_names or top == "__future__"):
            found.setdefault(top, via)

    def enter(mod: str, fn: str, via: list[str], seen: set[str]) -> None:
        if fn in seen:
            return
        seen.add(fn)
        for name, optional in parse(mod).functions[fn]:
            add(name, "entered", via + [f"{mod}:{fn}"], optional)
        for callee in parse(mod).calls.get(fn, ()):
            enter(mod, callee, via, seen)

    for entry in entries:
        mod, _, fn = entry.partition(":")
        add(mod, "loaded" if fn else "entered", [entry], False)
        if fn:
            enter(mod, fn, [], set())
    while todo:
        name, how, via = todo.pop()
        parsed = parse(name)
        for imported, optional in parsed.module_level:
            add(imported, how, via + [name], optional)
        if how == "entered":
            for fn, imports in parsed.functions.items():
                for imported, optional in imports:
                    add(imported, "entered", via + [f"{name}:{fn}"], optional)
    return found


@functools.lru_cache(maxsize=1)
def _owners() -> dict[str, list[str]]:
    return md.packages_distributions()


def distributions(module: str) -> list[str]:
    """Canonical names of the distributions installed here that provide the top-level `module`."""
    return [canonicalize_name(d) for d in _owners().get(module, [])]
