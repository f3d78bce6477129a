#!/usr/bin/env python3
"""No import cycles inside any library crate: the module graph of each crate's src/ (a module
depends on another when its code, comments stripped, names a path into it: `crate::a::b`,
`super::x`, `use super::{x, y}`) must be acyclic. A child naming its ancestor is not an edge (the
ancestor declares it). Prints each crate's module count and exits 1 naming any cycle.

Usage: scripts/check_cycles.py CRATE_DIR...
"""
import os
import re
import sys


def module_path(root, path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def graph(crate):
    root = os.path.join(crate, "src")
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".rs")]
    files = [f for f in files if os.sep + "bin" + os.sep not in f]
    mods = {module_path(root, f): f for f in files}
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        text = re.sub(r"//[^\n]*", "", open(f, encoding="utf-8").read())
        here = list(m[:-1])  # what `super` names, from a file or a mod.rs alike
        refs = {tuple(x.split("::")) for x in re.findall(r"crate::([a-z_0-9:]+)", text)}
        refs |= {tuple(here + x.split("::")) for x in re.findall(r"\bsuper::([a-z_0-9:]+)", text)}
        for group in re.findall(r"\bsuper::\{([^}]*)\}", text):
            refs |= {tuple(here + [x.strip().split(" ")[0]]) for x in group.split(",") if x.strip()[:1].islower()}
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            refs |= {(x,) for x in re.findall(r"([a-z_0-9]+)::", group)}
        for r in refs:
            for n in range(len(r), 0, -1):
                target = r[:n]
                if target in mods:
                    if target != m and m[: len(target)] != target:
                        edges[m].add(target)
                    break
    return edges


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                out.append(sorted("::".join(x) or "lib" for x in comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


failed = False
for crate in sys.argv[1:]:
    edges = graph(crate)
    found = cycles(edges)
    print(f"{crate}: {len(edges)} modules, {len(found)} import cycles")
    for c in found:
        print("  cycle: " + " <-> ".join(c))
        failed = True
sys.exit(1 if failed else 0)
