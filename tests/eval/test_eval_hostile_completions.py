"""Completions that attack the checker from inside their own interpreter never pass.

A Python task's tests run in a checker process the completion's code never runs in (see
`proxy_check.py`): frame walking, gc scans, ctypes memory reads, patched builtins, fake tokens,
`os._exit(0)`, writes to the pipes' descriptors, huge or recursive results and endless calls all
end as failed (or timeout). The one-interpreter runner (`pycheck.py`, a plain string program)
is shown fooled by the frame walk: the attack is real, the split is what stops it.
"""

from __future__ import annotations

import json

import pytest

from codefoundry.eval import Executor, load_task
from codefoundry.eval import proxy_check as codec

WRONG = "\n    return False\n"  # HumanEval/0 (has_close_elements): a wrong answer

# searches every frame it can reach for a 32-byte proof, writes it to every descriptor, exits 0
FRAME_WALK = '''
import os, sys
def _forge():
    found, f = [], sys._getframe(0)
    while f is not None:
        for scope in (f.f_locals, f.f_globals):
            found += [v for v in list(scope.values()) if isinstance(v, bytes) and len(v) == 32]
        f = f.f_back
    for token in found:
        for fd in range(1, 64):
            try:
                os.write(fd, token)
            except OSError:
                pass
        os._exit(0)
_forge()
'''

GC_SCAN = '''
import gc, os, types
for obj in gc.get_objects():
    cells = getattr(obj, "__closure__", None) or ()
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, bytes) and len(value) == 32:
            for fd in range(1, 64):
                try:
                    os.write(fd, value)
                except OSError:
                    pass
    if isinstance(obj, types.FrameType):
        for v in list(obj.f_locals.values()):
            if isinstance(v, bytes) and len(v) == 32:
                for fd in range(1, 64):
                    try:
                        os.write(fd, v)
                    except OSError:
                        pass
        os._exit(0)
'''

# reads its parent's memory (the checker): /proc/<ppid>/mem and process_vm_readv; reports what it got
CTYPES_READ = '''
import ctypes, os
ppid = os.getppid()
seen = []
try:
    with open(f"/proc/{ppid}/mem", "rb") as f:
        seen.append("mem opened")
except OSError as e:
    seen.append(f"mem {type(e).__name__}")
try:
    os.listdir(f"/proc/{ppid}/fd")
    seen.append("fd listed")
except OSError as e:
    seen.append(f"fd {type(e).__name__}")
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(4096)
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 4096)
remote = iovec(0x400000, 4096)
n = libc.process_vm_readv(ppid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
seen.append(f"process_vm_readv {n} errno {ctypes.get_errno()}")
n = libc.ptrace(16, ppid, None, None)  # PTRACE_ATTACH
seen.append(f"ptrace {n} errno {ctypes.get_errno()}")
raise RuntimeError("REPORT " + "; ".join(seen))
'''

ATTACKS = {
    "frame walking": WRONG + FRAME_WALK,
    "frame walking inside the call": "\n    " + FRAME_WALK.strip().replace("\n", "\n    ") + "\n    return False\n",
    "gc scanning": WRONG + GC_SCAN,
    "always-true __eq__ result": "\n    return _Yes()\nclass _Yes:\n    def __eq__(self, o):\n        return True\n"
                                 "    __hash__ = object.__hash__\n",
    "int subclass with a true __eq__": "\n    return _Int(0)\nclass _Int(int):\n    def __eq__(self, o):\n"
                                       "        return True\n    __hash__ = int.__hash__\n",
    "patched builtins": WRONG + "import builtins\nbuiltins.AssertionError = ZeroDivisionError\n"
                                "builtins.isinstance = lambda *a: True\n__builtins__['abs'] = lambda x: 0\n",
    "printed fake tokens": WRONG + "import os\nfor _ in range(50):\n    print(os.urandom(16).hex())\n"
                                   "    os.write(1, os.urandom(16).hex().encode())\n",
    "os._exit(0) at module level": WRONG + "import os\nos._exit(0)\n",
    "os._exit(0) inside the call": "\n    import os\n    os._exit(0)\n",
    "writes to the pipes' fds": WRONG + "import os, struct\nfor fd in range(3, 64):\n"
                                        "    for msg in (b'[\"ready\",{}]', b'[\"ok\",true]', b'garbage'):\n"
                                        "        try:\n"
                                        "            os.write(fd, struct.pack('>I', len(msg)) + msg)\n"
                                        "        except OSError:\n            pass\n",
    "forged answers on the pipe": "\n    import os, struct\n    msg = b'[\"ok\",true]'\n    for fd in range(3, 64):\n"
                                  "        try:\n            os.write(fd, struct.pack('>I', len(msg)) + msg)\n"
                                  "        except OSError:\n            pass\n    return False\n",
    "huge result": "\n    return b\"x\" * 10_000_000\n",
    "huge list": "\n    return [1.5] * 5_000_000\n",
    "huge int": "\n    return 1 << 2_000_000\n",
    "recursive result": "\n    a = []\n    a.append(a)\n    return a\n",
    "deep result": "\n    a = True\n    for _ in range(100_000):\n        a = [a]\n    return a\n",
    "kills its parent": WRONG + "import ctypes, os, signal\nctypes.CDLL(None).kill(os.getppid(), signal.SIGKILL)\n",
    "sends SIGALRM and SIGINT to its parent": "\n    import ctypes, os, signal\n"
                                              "    ctypes.CDLL(None).kill(os.getppid(), signal.SIGALRM)\n"
                                              "    ctypes.CDLL(None).kill(os.getppid(), signal.SIGINT)\n"
                                              "    return False\n",
    "ctypes reads the checker's memory": WRONG + CTYPES_READ,
    "infinite loop in one call": "\n    while True:\n        pass\n",
    "infinite loop that swallows the timeout": "\n    while True:\n        try:\n            while True:\n"
                                               "                pass\n        except BaseException:\n"
                                               "            pass\n",
}


def test_frame_walking_forges_a_pass_in_one_interpreter_but_not_here(executor: Executor) -> None:
    he = load_task("humaneval").problems[0]
    program = he.program(WRONG + FRAME_WALK)
    assert executor.run("python", program.text).verdict == "passed"  # the attack is real: pycheck.py is fooled
    assert executor.run("python", program).verdict == "failed"


def test_shadowing_a_builtin_the_tests_use_forges_nothing(executor: Executor) -> None:
    """HumanEval/4's tests compare with `abs(...)`: a completion that rebinds `abs` passed in one interpreter;
    here the tests take only the entry point from the candidate."""
    he = load_task("humaneval").problems[4]
    assert he.task_id == "HumanEval/4" and "abs(candidate" in he.program("").tests
    program = he.program("\n    return 0.0\nabs = lambda x: 0\n")
    assert executor.run("python", program.text).verdict == "passed"  # fooled in one interpreter
    assert executor.run("python", program).verdict == "failed"


def test_hostile_completions_never_pass(executor: Executor) -> None:
    he = load_task("humaneval").problems[0]
    futures = {name: executor.submit("python", he.program(c)) for name, c in ATTACKS.items()}
    verdicts = {name: f.result() for name, f in futures.items()}
    for name, v in verdicts.items():
        print(f"{name}: {v.verdict} {v.output[-160:]!r}")
    assert {name: v.verdict for name, v in verdicts.items() if v.verdict not in ("failed", "timeout")} == {}
    assert verdicts["infinite loop in one call"].verdict == "timeout"
    assert verdicts["infinite loop that swallows the timeout"].verdict == "timeout"
    assert "broke the protocol" in verdicts["writes to the pipes' fds"].output
    assert "ended (status 0)" in verdicts["os._exit(0) inside the call"].output
    assert "exceeds" in verdicts["huge result"].output
    # the checker is out of the child's reach: no memory, no descriptors, no ptrace
    report = verdicts["ctypes reads the checker's memory"].output
    assert "REPORT mem PermissionError; fd PermissionError; process_vm_readv -1 errno 1; ptrace -1 errno 1" in report


def test_same_tricks_with_a_right_answer_still_pass(executor: Executor) -> None:
    """The checker is not failing everything: a correct answer beside harmless tricks passes."""
    he = load_task("humaneval").problems[0]
    for extra in ("import builtins\nbuiltins.AssertionError = ZeroDivisionError\nbuiltins.print = None\n",
                  ATTACKS["printed fake tokens"].removeprefix(WRONG),
                  "\nimport numpy as np\nassert np.arange(3).sum() == 3\n"):
        assert executor.run("python", he.program(he.reference + extra)).passed, extra


def test_exceptions_handles_and_modules_cross_as_in_one_interpreter(executor: Executor, tmp_path) -> None:
    """Built-in exceptions keep their type, objects become handles, modules the tests name are imported."""
    rows = [
        {"prompt": "def f(x):\n", "tests": "try:\n    f(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"
         "else:\n    raise AssertionError\nassert f(4) == 2.0"},
        {"prompt": "class Box:\n    def __init__(self, v):\n        self.v = v\n    def get(self):\n"
                   "        return self.v\ndef f(x):\n", "tests": "b = Box(3)\nb.v = 5\nassert b.get() == 5\n"
                   "assert f(b) == 5\nassert f(Box(9)) != Box(9)\nassert math.isqrt(f(Box(16))) == 4"},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(str(path))
    first = "    if x < 0:\n        raise ValueError('negative')\n    return x ** 0.5\n"
    second = "    return x.get()\nimport math\n"
    assert executor.run("python", task.problems[0].program(first)).passed
    assert executor.run("python", task.problems[1].program(second)).passed
    assert not executor.run("python", task.problems[1].program("    return Box(x.get())\nimport math\n")).passed


@pytest.mark.parametrize("frame", [
    b'{"a": 1}', b'["ok"]', b'["ok", ["x", 1]]', b'["ok", ["i", "zz"]]', b'["ok", ["d", [[["l", []], 1]]]]',
    b'["ok", ' + b'["l", [' * 200 + b'1' + b']]' * 200 + b']', b'not json', b'["ok", ["h", "1"]]',
])
def test_the_checker_decodes_plain_data_only(frame: bytes) -> None:
    """Unknown tags, unhashable keys, too deep or malformed values are protocol errors, never objects."""
    import os

    r, w = os.pipe()
    try:
        os.write(w, codec._HEADER.pack(len(frame)) + frame)
        with pytest.raises(codec.ProtocolError):
            message = codec.receive(r)
            if len(message) != 2:
                raise codec.ProtocolError("short")
            codec.decode(message[1], lambda tag, payload: (_ for _ in ()).throw(codec.ProtocolError(tag)))
    finally:
        os.close(r)
        os.close(w)


def test_codec_round_trips_plain_data() -> None:
    value = [None, True, 0, -(1 << 80), 1.5, float("inf"), "é\ud800", b"\x00\xff", (1, (2,)), {(1, 2): {3}},
             frozenset({"a"}), 2 + 3j, {"k": [[]]}]
    tree = codec.encode(value, lambda x, depth: (_ for _ in ()).throw(TypeError(x)))
    decoded = codec.decode(json.loads(json.dumps(tree)), lambda tag, payload: None)
    assert decoded == value and type(decoded[8]) is tuple and type(decoded[10]) is frozenset


def test_user_tasks_split_where_their_tests_are_python_on_their_own(tmp_path) -> None:
    from codefoundry.eval.languages import SplitProgram

    rows = [{"prompt": "def f():\n", "tests": "assert f() == 1", "reference": "    return 1\n"},
            {"prompt": "S = r'''", "tests": "'''\nassert S == 'x'"}]  # the tests close the completion's literal
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split, whole = (p.program("x") for p in load_task(str(path)).problems)
    assert isinstance(split, SplitProgram) and split.entry_points == ("f",)
    assert whole == "S = r'''x\n'''\nassert S == 'x'\n"
