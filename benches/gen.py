#!/usr/bin/env python3
"""Reproducible bundles for the benchmarks (benches/run).

Every byte depends only on the seed and the sizes given, so two machines build the same
bundles. The small-file workloads are a nested tree shaped like `node_modules` (packages with
lib/, dist/, src/ and nested node_modules/), files of 512 B to 8 KiB whose text is drawn
from a fixed vocabulary (it compresses about 3:1, like JavaScript), an appspec with one
`files` entry `/` -> destination, `permissions` setting mode and owner on every file and
directory, and trivial hooks.

    gen.py small  --files N --dest DIR --out BUNDLE_DIR [--changed 0.1 --out2 BUNDLE2_DIR]
    gen.py large  --total BYTES --files 4 --dest DIR --out BUNDLE_DIR
    gen.py hooks  --hooks 100 --dest DIR --out BUNDLE_DIR
    gen.py one    --size BYTES --dest DIR --out BUNDLE_DIR

Archives are made by the caller (tar/zip), so the generator only writes directories.
"""

import argparse
import os
import random
import sys

SEED = 20261122
MIN_SIZE, MAX_SIZE = 512, 8192

WORDS = (
    "function return const let var this that value result index length object array string "
    "number boolean undefined null true false require module exports import export default "
    "async await promise then catch error throw new class extends super constructor prototype "
    "call apply bind map filter reduce forEach push pop shift slice splice concat join split "
    "keys values entries assign create define property get set has delete size options config "
    "callback handler listener event emit on off once buffer stream read write pipe end data "
    "chunk encoding utf8 path resolve dirname basename extname parse format url query hash "
    "request response status headers body json stringify typeof instanceof if else for while "
    "switch case break continue try finally ( ) { } [ ] ; , . = == === => + - * / < > && || !"
).split()


def text_pool(rng, size):
    """A pool of code-like text; files are slices of it at random offsets."""
    out = []
    n = 0
    while n < size:
        w = WORDS[rng.randrange(len(WORDS))]
        if rng.random() < 0.08:
            w += "\n" + " " * (2 * rng.randrange(4))
        elif rng.random() < 0.3:
            w += "_" + str(rng.randrange(1000))
        out.append(w)
        n += len(w) + 1
    return (" ".join(out)).encode()[:size]


def tree(rng, nfiles):
    """Directories (relative paths) and, for each file, (directory index, name, size)."""
    ndirs = max(1, nfiles // 8)
    dirs = ["node_modules"]
    packages = [0]  # indices of dirs that are packages (or the root node_modules)
    pkgno = 0
    while len(dirs) < ndirs:
        parent = dirs[packages[rng.randrange(len(packages))]]
        if parent != "node_modules" and rng.random() < 0.25:
            base = parent + "/node_modules"
        elif parent == "node_modules" or rng.random() < 0.5:
            base = "node_modules"
        else:
            base = parent + "/node_modules"
        pkg = f"{base}/pkg-{pkgno:05d}"
        pkgno += 1
        packages.append(len(dirs))
        dirs.append(pkg)
        for sub in ("lib", "dist", "src/util")[: rng.randrange(4)]:
            if len(dirs) >= ndirs:
                break
            dirs.append(f"{pkg}/{sub}")
    files = []
    for i in range(nfiles):
        d = rng.randrange(len(dirs))
        ext = (".js", ".js", ".js", ".ts", ".json", ".md", ".map")[rng.randrange(7)]
        files.append((d, f"f{i:06d}{ext}", rng.randint(MIN_SIZE, MAX_SIZE)))
    return dirs, files


def appspec(dest, owner, group, hooks):
    lines = [
        "version: 0.0",
        "os: linux",
        "files:",
        "  - source: /",
        f"    destination: {dest}",
        "permissions:",
        f"  - object: {dest}",
        "    mode: 640",
        f"    owner: {owner}",
        f"    group: {group}",
        "    type:",
        "      - file",
        f"  - object: {dest}",
        "    mode: 750",
        f"    owner: {owner}",
        f"    group: {group}",
        "    type:",
        "      - directory",
    ]
    if hooks:
        lines.append("hooks:")
        for event, scripts in hooks:
            lines.append(f"  {event}:")
            for s in scripts:
                lines.append(f"    - location: {s}")
                lines.append("      timeout: 60")
    return "\n".join(lines) + "\n"


TRIVIAL_HOOKS = [
    ("BeforeInstall", ["scripts/hook.sh"]),
    ("AfterInstall", ["scripts/hook.sh"]),
    ("ApplicationStart", ["scripts/hook.sh"]),
    ("ValidateService", ["scripts/hook.sh"]),
]


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def write_common(out, dest, owner, group, hooks, scripts):
    write(os.path.join(out, "appspec.yml"), appspec(dest, owner, group, hooks).encode())
    for s in scripts:
        write(os.path.join(out, s), b"#!/bin/sh\nexit 0\n", 0o755)


def small(a):
    rng = random.Random(f"{SEED}-small-{a.files}")
    pool = text_pool(rng, 1 << 20)
    dirs, files = tree(rng, a.files)
    changed = set()
    if a.out2:
        crng = random.Random(f"{SEED}-changed-{a.files}")
        changed = set(crng.sample(range(len(files)), int(len(files) * a.changed)))
    for out, variant in ((a.out, 0), (a.out2, 1)):
        if not out:
            continue
        for d in dirs:
            os.makedirs(os.path.join(out, d), exist_ok=True)
        frng = random.Random(f"{SEED}-content-{a.files}")
        for i, (d, name, size) in enumerate(files):
            off = frng.randrange(len(pool) - MAX_SIZE)
            data = pool[off : off + size]
            if variant and i in changed:
                # A changed file: new content of a slightly different size.
                off = (off + 4099) % (len(pool) - MAX_SIZE)
                size = min(MAX_SIZE, size + 17)
                data = pool[off : off + size]
            with open(os.path.join(out, dirs[d], name), "wb") as f:
                f.write(data)
        write_common(out, a.dest, a.owner, a.group, TRIVIAL_HOOKS, ["scripts/hook.sh"])
    print(f"small: {len(files)} files in {len(dirs)} directories, {len(changed)} changed", file=sys.stderr)


def large(a):
    rng = random.Random(f"{SEED}-large")
    # Four files: 1/2, 1/4, 3/16 and 1/16 of the total (1 GiB, 512, 384 and 128 MiB of 2 GiB).
    parts = [a.total // 2, a.total // 4, a.total * 3 // 16]
    parts.append(a.total - sum(parts))
    chunk = 1 << 20
    for i, size in enumerate(parts):
        path = os.path.join(a.out, "data", f"blob{i}.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                n = min(chunk, left)
                # Half random (media, compressed jars), half text-like: gzip gets about 1.5:1.
                block = rng.randbytes(n // 2)
                f.write(block + (block.hex().encode()[: n - len(block)]))
                left -= n
    write_common(a.out, a.dest, a.owner, a.group, TRIVIAL_HOOKS, ["scripts/hook.sh"])
    print(f"large: {parts} bytes", file=sys.stderr)


def hooks(a):
    scripts = [f"scripts/h{i:03d}.sh" for i in range(a.hooks)]
    write_common(a.out, a.dest, a.owner, a.group, [("BeforeInstall", scripts)] if scripts else [], scripts)
    write(os.path.join(a.out, "app.txt"), b"one file\n")


def one(a):
    rng = random.Random(f"{SEED}-one-{a.size}")
    path = os.path.join(a.out, "data.bin")
    os.makedirs(a.out, exist_ok=True)
    with open(path, "wb") as f:
        left = a.size
        while left > 0:  # randbytes of more than 256 MiB overflows
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    write_common(a.out, a.dest, a.owner, a.group, [], [])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["small", "large", "hooks", "one"])
    p.add_argument("--out", required=True)
    p.add_argument("--out2")
    p.add_argument("--dest", required=True)
    p.add_argument("--owner", default="root")
    p.add_argument("--group", default="root")
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--changed", type=float, default=0.1)
    p.add_argument("--total", type=int, default=2 << 30)
    p.add_argument("--hooks", type=int, default=100)
    p.add_argument("--size", type=int, default=4096)
    a = p.parse_args()
    {"small": small, "large": large, "hooks": hooks, "one": one}[a.kind](a)


if __name__ == "__main__":
    main()
