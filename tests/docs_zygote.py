"""A warm ``qvl`` for the docs test (tests/docs_harness.py): fork instead of importing torch again.

The docs run about fifty ``qvl`` commands; each new process spends seconds importing torch
and transformers before it does anything. ``serve SOCKET`` imports them once and then, for
each request of ``client SOCKET ARGS...``, forks a child that takes over the client's
stdin/stdout/stderr, working folder and environment and runs ``connectors.cli.main(ARGS)``,
the function the ``qvl`` console script calls. The client relays Ctrl-C / SIGTERM to the
child and exits with its exit code, so to bash it is ``qvl``. The server never runs model
code itself (it stays single-threaded, so forking it is safe).
"""
from __future__ import annotations

import array
import atexit
import json
import os
import select
import signal
import socket
import struct
import sys


def serve(path: str) -> None:
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # like the qvl script: tests/connectors is not the connectors package
    import connectors.cli  # noqa: F401 - the imports the children share
    import embedder.model  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Qwen3ForCausalLM, Qwen3VLForConditionalGeneration  # noqa: F401

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    children: dict[int, socket.socket] = {}
    while True:
        ready, _, _ = select.select([server, *children.values()], [], [], 0.05)
        _reap(children)
        for conn in ready:
            if conn is server:
                continue
            pid = next((p for p, c in children.items() if c is conn), None)
            if pid is not None and not conn.recv(1):  # the client is gone (killed): so is its command
                with _quiet():
                    os.killpg(pid, signal.SIGKILL)
        if server not in ready:
            continue
        conn, _ = server.accept()
        msg, fds = _recv_fds(conn)
        request = json.loads(msg)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            server.close()
            conn.close()
            _child(request, fds)
        for fd in fds:
            os.close(fd)
        children[pid] = conn
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def _reap(children: dict[int, socket.socket]) -> None:
    """Tell each client whose command ended its exit code."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            code = os.waitstatus_to_exitcode(status)
            with _quiet():
                conn.sendall(json.dumps({"exit": code if code >= 0 else 128 - code}).encode() + b"\n")
            conn.close()


def _child(request: dict, fds: list[int]) -> None:
    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        os.setsid()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("session"):  # a docs page's Python process (tests/docs_session.py)
            sys.argv = ["python"]
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from docs_session import main as session_main

            sys.path.pop(0)
            session_main(fds[3])
            code = 0
            return
        sys.argv = ["qvl", *request["args"]]
        from connectors.cli import main

        try:
            code = main(request["args"]) or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    except BaseException:  # noqa: BLE001 - a crash is the command's failure, reported like Python would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with _quiet():
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def client(path: str, args: list[str], *, session_fd: int | None = None) -> int:
    """Run ``qvl ARGS`` in a fork of the server at ``path`` (or, with ``session_fd``, a docs page's
    Python process answering on that descriptor); returns its exit code."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    msg = json.dumps({"args": args, "cwd": os.getcwd(), "env": dict(os.environ),
                      "session": session_fd is not None}).encode()
    fds = [0, 1, 2] + ([session_fd] if session_fd is not None else [])
    socket.send_fds(sock, [struct.pack("!I", len(msg)) + msg], fds)
    reader = sock.makefile("rb")
    pid = json.loads(reader.readline())["pid"]

    def forward(signum: int, _frame: object) -> None:
        with _quiet():
            os.kill(pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    line = reader.readline()
    return int(json.loads(line)["exit"]) if line else 1


def _recv_fds(conn: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    head, ancdata, _, _ = conn.recvmsg(4, socket.CMSG_LEN(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    (size,) = struct.unpack("!I", head)
    body = b""
    while len(body) < size:
        body += conn.recv(size - len(body))
    return body, list(fds)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)  # type: ignore[arg-type]


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif sys.argv[1] == "session":
        sys.exit(client(sys.argv[2], [], session_fd=int(sys.argv[3])))
    else:
        sys.exit(client(sys.argv[2], sys.argv[3:]))
