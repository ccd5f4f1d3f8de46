"""What the docs' shell blocks run instead of a command that cannot run in a test (tests/docs_harness.py).

``python docs_tools.py pip install [-e] ".[extra,...]" ...``: the tests run offline, so
instead of installing, check that every extra named exists in pyproject.toml and that every
requirement it brings (through the extras it names, too) is installed in a matching version.

``python docs_tools.py bench benchmarks/bench_x.py ARGS...``: a benchmark takes minutes;
import the script as ``__main__`` and stop once its argument parser has accepted ARGS.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import runpy
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parents[1]


def check_pip(args: list[str]) -> int:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = re.sub(r"[-_.]+", "-", project["name"]).lower()
    extras_table = project.get("optional-dependencies", {})
    specs = [a for a in args[1:] if not a.startswith("-")]
    if not specs:
        print(f"pip {' '.join(args)}: nothing to install", file=sys.stderr)
        return 2
    problems, checked = [], 0

    def requirement_ok(req: Requirement, via: str) -> None:
        nonlocal checked
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            return
        if re.sub(r"[-_.]+", "-", req.name).lower() == name:
            for extra in req.extras:
                extra_ok(extra)
            return
        checked += 1
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req} (from {via}) is not installed")
            return
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} (from {via}) is installed as {version}")

    def extra_ok(extra: str) -> None:
        if extra not in extras_table:
            problems.append(f"pyproject.toml has no extra {extra!r} (it has {', '.join(sorted(extras_table))})")
            return
        for line in extras_table[extra]:
            requirement_ok(Requirement(line), f"[{extra}]")

    for spec in specs:
        m = re.fullmatch(r"\.(?:\[([\w,\s-]*)\])?", spec)
        if m:
            for line in project.get("dependencies", []):
                requirement_ok(Requirement(line), "the base install")
            for extra in filter(None, (e.strip() for e in (m.group(1) or "").split(","))):
                extra_ok(extra)
        else:
            requirement_ok(Requirement(spec), "the command line")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"(checked, not run: pip {' '.join(args)}: {checked} requirements installed)")
    return 0


class _Parsed(Exception):
    pass


def check_bench(script: str, args: list[str]) -> int:
    original = argparse.ArgumentParser.parse_known_args
    depth = 0

    def parse_known_args(self, *a, **kw):  # type: ignore[no-untyped-def]
        nonlocal depth
        depth += 1
        try:
            result = original(self, *a, **kw)
        finally:
            depth -= 1
        if depth == 0:
            raise _Parsed(result)
        return result

    argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    sys.argv = [script, *args]
    sys.path.insert(0, str(pathlib.Path(script).resolve().parent))
    try:
        runpy.run_path(script, run_name="__main__")
    except _Parsed as parsed:
        namespace, extra = parsed.args[0]
        if extra:
            print(f"{script}: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
            return 2
        print(f"(checked, not run: {script} accepts {' '.join(args) or 'no arguments'}: {namespace})")
        return 0
    print(f"{script} finished without parsing its arguments", file=sys.stderr)
    return 1


def main() -> int:
    if sys.argv[1:2] == ["pip"]:
        return check_pip(sys.argv[2:])
    if sys.argv[1:2] == ["bench"]:
        return check_bench(sys.argv[2], sys.argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
