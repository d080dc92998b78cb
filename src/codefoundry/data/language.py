"""Which language a file is in: The Stack's extension table, then file names, then shebangs.

The extension table is BigCode's `programming-languages-to-file-extensions.json` (370
languages, shipped in `languages/` with its Apache-2.0 license). Language names are the
table's ("Python", "C#", "C++"); `slug()` gives the lower-case names of
`visual_inspection.csv` ("python", "c-sharp"). Files the table misses are tried by name
(Makefile, Dockerfile, CMakeLists.txt, …) and then by the `#!` interpreter line.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources

FILE_NAMES = {  # exact file names → language (after go-enry/linguist `filenames`)
    "makefile": "Makefile", "gnumakefile": "Makefile", "dockerfile": "Dockerfile", "containerfile": "Dockerfile",
    "cmakelists.txt": "CMake", "rakefile": "Ruby", "gemfile": "Ruby", "vagrantfile": "Ruby", "podfile": "Ruby",
    "guardfile": "Ruby", "jenkinsfile": "Groovy", "sconstruct": "Python", "sconscript": "Python",
    "build.bazel": "Python", "workspace": "Python", "buck": "Python", ".bashrc": "Shell", ".bash_profile": "Shell",
    ".zshrc": "Shell", ".profile": "Shell", ".bash_aliases": "Shell", "pkgbuild": "Shell", "apkbuild": "Shell",
    ".emacs": "Emacs Lisp", ".vimrc": "Vim script", "_vimrc": "Vim script", "meson.build": "Meson",
    "configure.ac": "M4Sugar", "nginx.conf": "Nginx", ".htaccess": "ApacheConf", "pipfile": "TOML",
    "cargo.lock": "TOML", "go.mod": "Go Module", "requirements.txt": "Pip Requirements",
}

INTERPRETERS = {  # `#!` interpreter (version digits stripped) → language (after go-enry `interpreters`)
    "python": "Python", "pypy": "Python", "sh": "Shell", "bash": "Shell", "zsh": "Shell", "dash": "Shell",
    "ksh": "Shell", "ash": "Shell", "node": "JavaScript", "nodejs": "JavaScript", "deno": "TypeScript",
    "ts-node": "TypeScript", "perl": "Perl", "ruby": "Ruby", "php": "PHP", "rscript": "R", "lua": "Lua",
    "luajit": "Lua", "tclsh": "Tcl", "wish": "Tcl", "awk": "Awk", "gawk": "Awk", "mawk": "Awk", "julia": "Julia",
    "pwsh": "PowerShell", "powershell": "PowerShell", "osascript": "AppleScript", "make": "Makefile",
    "tcsh": "Tcsh", "csh": "Tcsh", "runhaskell": "Haskell", "runghc": "Haskell", "escript": "Erlang",
    "groovy": "Groovy", "scala": "Scala", "swift": "Swift", "elixir": "Elixir", "racket": "Racket",
    "guile": "Scheme", "sbcl": "Common Lisp", "clisp": "Common Lisp", "ocaml": "OCaml", "crystal": "Crystal",
    "dart": "Dart", "kotlin": "Kotlin", "sed": "sed", "nix-shell": "Nix",
}

_SHEBANG = re.compile(rb"^#!\s*(\S+)(?:[ \t]+(\S+))?")
_VERSION = re.compile(r"[\d.]+$")


@cache
def extension_table() -> dict[str, str]:
    """Extension (with dot, case-sensitive: ".C" is C++, ".c" is C) or bare file name → language."""
    text = resources.files("codefoundry.data").joinpath("languages/programming-languages-to-file-extensions.json")
    table: dict[str, list[str]] = json.loads(text.read_text(encoding="utf-8"))
    return {ext: lang for lang, exts in table.items() for ext in exts}


@cache
def languages() -> frozenset[str]:
    return frozenset(extension_table().values()) | frozenset(FILE_NAMES.values()) | frozenset(INTERPRETERS.values())


def slug(language: str) -> str:
    """`visual_inspection.csv`'s name for a language: "C#" → "c-sharp", "Emacs Lisp" → "emacs-lisp"."""
    return language.lower().replace("#", "-sharp").replace(" ", "-")


def split_ext(name: str) -> tuple[str, str | None]:
    """(`ext` column value without the dot, language by extension or None). Longest known suffix wins."""
    table = extension_table()
    if name in table:  # bare file names in the table ("Dockerfile", "Makefile")
        return name.lower(), table[name]
    dots = [i for i, c in enumerate(name) if c == "."]
    for i in dots:  # leftmost dot = longest suffix (".cmake.in" before ".in")
        if i == 0 and len(dots) == 1:
            break  # ".bashrc": a hidden file, not an extension
        suffix = name[i:]
        lang = table.get(suffix) or table.get(suffix.lower())
        if lang:
            return suffix[1:], lang
    return (name.rsplit(".", 1)[1] if dots and dots[-1] > 0 else ""), None


def shebang_language(head: bytes) -> str | None:
    """Language named by a `#!` line (`#!/usr/bin/env python3` → Python), or None."""
    m = _SHEBANG.match(head)
    if not m:
        return None
    prog = m.group(1).rsplit(b"/", 1)[-1].decode("latin-1")
    if prog == "env" and m.group(2):
        prog = m.group(2).decode("latin-1")
    return INTERPRETERS.get(_VERSION.sub("", prog.lower()))


def detect(path: str, head: bytes = b"") -> tuple[str, str | None]:
    """(`ext`, language or None) for a file at `path` (in its repo) whose first bytes are `head`."""
    name = path.rsplit("/", 1)[-1]
    ext, lang = split_ext(name)
    lang = FILE_NAMES.get(name.lower()) or lang
    if lang is None and head.startswith(b"#!"):
        lang = shebang_language(head[:200])
    return ext, lang
