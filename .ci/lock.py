"""Write ``constraints.txt``: the exact versions of Text2FX's dependency tree in the running environment.

Run from the repository root in an environment where ``pip install -e ".[test]"`` works (CI's, or yours):

    python .ci/lock.py            # rewrites constraints.txt
    python .ci/lock.py --check    # exit 1 when constraints.txt differs from this environment
    python .ci/lock.py --stdout   # print it
    python .ci/lock.py --wheels   # exit 1 unless every locked version has a wheel for this Python and platform

The tree is walked from ``pyproject.toml``'s dependencies and every optional extra that is installed here
(markers evaluated for this interpreter), so the lock holds what the project needs and nothing else that
happens to be installed. Versions come from the installed distributions (what ``pip freeze`` reports).
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("lock: needs Python 3.11 or newer (tomllib)")

try:
    from packaging.requirements import Requirement
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ModuleNotFoundError:  # before anything is installed: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
# laion-clap's requirements published only as pure-Python source (no compiler needed to build them).
SOURCE_ONLY = {"wget", "progressbar"}
LOCK = ROOT / "constraints.txt"
HEADER = """\
# Exact versions Text2FX is tested and benchmarked with (CI installs with this lock):
#     pip install -c constraints.txt -e ".[test]"
# pyproject.toml declares the ranges the code supports; this file pins one tested point inside them.
# Every package here installs from a wheel except wget and progressbar (laion-clap's; pure-Python
# sources published only as sdists, built by setuptools without a compiler).
# torchlpc stays at 0.6: 0.7.x exists only as a C++ source package that compiles against a second torch.
# Regenerate from a working environment with `python .ci/lock.py`.
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: list[tuple[Requirement, set[str]]]) -> dict[str, str]:
    """Installed name -> version for every distribution reachable from ``roots`` (with their extras)."""
    seen: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    stack = list(roots)
    while stack:
        req, extras = stack.pop()
        key = (_norm(req.name), frozenset(extras))
        if key in done:
            continue
        done.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                sys.exit(f"lock: {req.name} is required but not installed; install the project first")
            continue
        seen[_norm(dist.metadata["Name"])] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is not None:
                envs = [{"extra": e} for e in (extras or {""})]
                if not any(sub.marker.evaluate(env) for env in envs):
                    continue
            stack.append((sub, set(sub.extras)))
    return seen


def lock_text() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = [(Requirement(r), set(Requirement(r).extras)) for r in project["dependencies"]]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        for raw in reqs:
            req = Requirement(raw)
            try:
                md.distribution(req.name)
            except md.PackageNotFoundError:
                if extra == "test":  # CI installs it: the lock must cover it
                    sys.exit(f"lock: the test extra needs {req.name}; install `-e \".[test]\"` first")
                print(f"lock: extra [{extra}] needs {req.name}, not installed here: left out", file=sys.stderr)
                continue
            roots.append((req, set(req.extras)))
    pins = _closure(roots)
    pins.pop("text2fx", None)
    return HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def _index_files(name: str, index: str) -> list[dict]:
    """The files the index lists for project `name` (PEP 691 JSON simple API, as pip reads it)."""
    import json
    import urllib.request

    request = urllib.request.Request(f"{index.rstrip('/')}/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["files"]


def missing_wheels(pins: dict[str, str], index: str) -> list[str]:
    """`name==version` of each pin with no wheel for this interpreter and platform on `index` (one request
    per project, in parallel: seconds, where a `pip install --dry-run` of the set downloads gigabytes)."""
    from concurrent.futures import ThreadPoolExecutor

    tags = set(sys_tags())

    def check(item: tuple[str, str]) -> str | None:
        name, version = item
        for f in _index_files(name, index):
            if not f["filename"].endswith(".whl") or f.get("yanked"):
                continue
            wheel_name, wheel_version, _, wheel_tags = parse_wheel_filename(f["filename"])
            if canonicalize_name(wheel_name) == name and str(wheel_version) == version and wheel_tags & tags:
                return None
        return f"{name}=={version}"

    with ThreadPoolExecutor(16) as pool:
        return [m for m in pool.map(check, sorted(pins.items())) if m is not None]


def read_lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with constraints.txt instead of writing it")
    parser.add_argument("--stdout", action="store_true", help="print the lock instead of writing it")
    parser.add_argument("--wheels", action="store_true", help="check that every locked version (but "
                        f"{', '.join(sorted(SOURCE_ONLY))}) has a wheel for this interpreter on the index")
    args = parser.parse_args()
    if args.wheels:
        import os

        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
        pins = {k: v for k, v in read_lock().items() if k not in SOURCE_ONLY}
        missing = missing_wheels(pins, index)
        if missing:
            print(f"lock: no wheel for this Python and platform on {index} (pip would compile): "
                  f"{', '.join(missing)}", file=sys.stderr)
            return 1
        print(f"lock: all {len(pins)} locked packages but {', '.join(sorted(SOURCE_ONLY))} install from wheels")
        return 0
    text = lock_text()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        if LOCK.read_text() != text:
            print("lock: constraints.txt differs from this environment; run `python .ci/lock.py`", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(text)
    print(f"lock: wrote {LOCK.relative_to(ROOT)} ({text.count('==')} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
