#!/usr/bin/env python3
"""Reports import cycles between the source files of each crate.

A file depends on another when it names an item of that file's module
(`use crate::a::b`, `crate::a::f(..)`, `super::x`, `self::m::y`). Declaring a
child module (`mod m;`) is not a dependency, and neither is naming the crate
root (`lib.rs`/`main.rs` only declares modules and re-exports). A cycle is a
strongly connected set of two or more files.

    scripts/import-cycles.py            # every crate of the workspace
    scripts/import-cycles.py crates/omen

Exits 1 listing the cycles when there is one, 0 otherwise.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def crate_dirs(args):
    if args:
        return [ROOT / a for a in args]
    out = []
    for toml in sorted(ROOT.glob("**/Cargo.toml")):
        if "target" in toml.parts or ".git" in toml.parts:
            continue
        if (toml.parent / "src").is_dir():
            out.append(toml.parent)
    return out


def module_files(src: Path):
    """Module path (tuple) -> file, for the library or binary tree."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "mod":
            parts = parts[:-1]
        if parts in (["lib"], ["main"]):
            parts = []
        mods[tuple(parts)] = f
    return mods


PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def references(text: str):
    text = strip_comments(text)
    refs = []
    for m in USE_GROUP_RE.finditer(text):
        base = [p for p in m.group(2).split("::") if p]
        for item in re.split(r"[,\s{}]+", m.group(3)):
            item = item.split(" as ")[0].strip()
            if item and item != "self":
                refs.append((m.group(1), base + item.split("::")))
            elif item == "self":
                refs.append((m.group(1), base))
    for m in PATH_RE.finditer(text):
        refs.append((m.group(1), [p for p in m.group(2).split("::") if p]))
    return refs


def resolve(start, path, mods):
    """The longest module prefix of `start + path` that is a file."""
    full = list(start) + path
    for n in range(len(full), 0, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return ()


def edges(mods):
    graph = {m: set() for m in mods}
    for mod, f in mods.items():
        is_dir_mod = f.name in ("mod.rs", "lib.rs", "main.rs")
        here = list(mod) if is_dir_mod else list(mod)
        for kind, path in references(f.read_text(encoding="utf-8", errors="replace")):
            if kind == "crate":
                start = []
            elif kind == "self":
                start = here
            else:  # super: the parent of this module
                start = here[:-1]
                while path and path[0] == "super":
                    start, path = start[:-1], path[1:]
            target = resolve(start, path, mods)
            if target and target != mod:
                graph[mod].add(target)
    return graph


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    found = False
    for crate in crate_dirs(sys.argv[1:]):
        src = crate / "src"
        mods = module_files(src)
        for comp in cycles(edges(mods)):
            found = True
            files = sorted(str(mods[m].relative_to(ROOT)) for m in comp)
            print(f"import cycle in {crate.relative_to(ROOT)}: " + " <-> ".join(files))
    if found:
        sys.exit(1)
    print("import-cycles: no cycle between the files of any crate")


if __name__ == "__main__":
    main()
