"""The Python process of one docs page (see tests/docs_harness.py): runs blocks in one namespace.

Reads one JSON request a line on stdin (``{"code": ..., "where": "docs/x.md:12"}``), runs
the code in the page's namespace (an expression statement's value is printed, as in a
notebook; a block that assigns ``hits`` must leave it non-empty), and answers
``{"ok": bool, "error": traceback}`` on the file descriptor given as the first argument. The
blocks' own output goes to stdout/stderr.
"""
from __future__ import annotations

import ast
import json
import os
import sys
import traceback


def main(results_fd: int) -> None:
    results = os.fdopen(results_fd, "w")
    namespace: dict = {"__name__": "__main__"}
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # not this script's tests/ folder (tests/connectors is not the package)
    sys.path.insert(0, os.getcwd())  # as `python` in the page's folder
    for line in sys.stdin:
        request = json.loads(line)
        print(f"\n>>> {request['where']}", flush=True)
        try:
            tree = ast.parse(request["code"], request["where"])
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, request["where"], "exec"), namespace)
            if last is not None:  # show the last expression's value (not None), like a notebook cell
                value = eval(compile(ast.Expression(last.value), request["where"], "eval"), namespace)
                if value is not None:
                    print(repr(value))
            assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            if "hits" in assigned and not namespace.get("hits"):  # as for qvl search's "(no hits)"
                raise AssertionError("a documented search found nothing (`hits` is empty)")
            reply = {"ok": True}
        except BaseException:  # noqa: BLE001 - report everything, SystemExit included
            reply = {"ok": False, "error": traceback.format_exc(limit=-8)}
        sys.stdout.flush()
        sys.stderr.flush()
        results.write(json.dumps(reply) + "\n")
        results.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]))
