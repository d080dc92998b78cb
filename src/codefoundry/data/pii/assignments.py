"""Credentials found by where they stand: a secret-named assignment, a URL's user-info, a connection string,
a command-line flag or an `Authorization` header.

Each finder takes one line and yields `(rule, kind, start, end)` over it. Quoted values are
literals in every language; unquoted values are taken where they are literals: `.env` and shell
(`NAME=value`, `export NAME=value`), Dockerfile `ENV`, YAML (`name: value`) and INI/properties
(`name = value`), with the code forms of the same shapes ruled out (`password = get_password()`,
`password: str`, `token = self.token`, `key = cache_key;`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

from codefoundry.data.pii.gibberish import detector
from codefoundry.data.pii.values import is_placeholder, is_template, looks_random

PASSWORD_PARTS = {"password", "passwd", "pwd", "pass", "passphrase", "pw", "passwort", "contrasena", "senha"}
SECRET_PARTS = {"secret", "token", "apikey", "credential", "credentials", "authtoken", "accesstoken", "secretkey",
                "privatekey", "psk", "sas"}
KEY_QUALIFIERS = {"api", "access", "secret", "private", "auth", "client", "encryption", "encrypt", "signing", "sign",
                  "master", "account", "app", "license", "service", "consumer", "webhook", "session", "jwt", "hmac",
                  "storage", "admin", "server", "subscription", "live", "prod", "deploy", "ssh", "gpg", "cipher",
                  "aes", "rsa", "shared", "root", "cookie", "csrf", "security", "app_secret", "django"}
NOT_A_SECRET = {"id", "ids", "name", "names", "file", "filename", "files", "path", "paths", "dir", "url", "uri", "urls",
                "endpoint", "host", "type", "types", "length", "len", "size", "count", "field", "fields", "label",
                "prompt", "placeholder", "hint", "header", "headers", "param", "params", "regex", "re", "pattern",
                "policy", "hash", "hashed", "hasher", "hashers", "salt", "reset", "required", "enabled", "enable",
                "disabled", "env", "var", "variable", "mode", "method", "version", "format", "prefix", "suffix",
                "limit", "min", "max", "strength", "rule", "rules", "validator", "validators", "input", "form",
                "column", "attr", "attribute", "description", "help", "text", "message", "msg", "error", "errors",
                "class", "provider", "manager", "cache", "location", "source", "kind", "style", "index", "idx",
                "position", "pos", "start", "end", "expiry", "expires", "expiration", "expire", "lifetime", "ttl",
                "timeout", "age", "scope", "scopes", "usage", "at", "sha", "sha1", "sha256", "md5", "digest",
                "checksum", "fingerprint", "algorithm", "algo", "alg", "mask", "visible", "arn", "ref", "template",
                "color", "icon", "button", "link", "route", "view", "page", "widget", "changed", "seconds",
                "minutes", "days", "lookup", "mapping", "map", "list", "dict", "set", "table", "schema", "model",
                "serializer", "command", "cmd", "flag", "option", "options", "key", "keys", "number", "num",
                "bits", "bytes", "encoding", "encoder", "decoder", "parser", "handler", "callback", "fn", "func",
                "function", "type_", "loader", "reader", "writer", "store", "storage", "service", "client",
                "generator", "factory", "builder", "util", "utils", "helper", "helpers", "test", "tests", "example",
                "sample", "dummy", "fake", "mock", "stub", "default", "defaults", "confirm", "confirmation", "again",
                "repeat", "old", "provided", "entered", "typed", "user", "username", "login", "email", "sid",
                "issuer", "audience", "tokenizer", "tokens", "kwargs", "args"}
TYPE_WORDS = {"str", "string", "int", "integer", "bool", "boolean", "bytes", "none", "null", "nil", "true", "false",
              "undefined", "optional", "any", "object", "number", "char", "text", "secretstr", "secretbytes",
              "required", "yes", "no", "on", "off", "float", "double", "list", "dict"}
WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


@cache
def name_kind(name: str) -> str | None:
    """"password" or "key" if `name` names a credential (`DB_PASSWORD`, `apiKey`, `SECRET_KEY`, `client_secret`,
    `auth_token`), None for everything else (`password_length`, `TOKEN_URL`, `cache_key`, `tokenizer`)."""
    parts = [p.lower() for p in WORDS.findall(name)]
    if not parts or parts[-1] in NOT_A_SECRET - {"key"} or name.lower() in ("pwd", "oldpwd"):
        return None  # a shell's PWD is the working directory
    if any(p in PASSWORD_PARTS or p.endswith(("password", "passwd", "passphrase")) for p in parts):
        return "password"
    if any(p in SECRET_PARTS for p in parts):
        return "key"
    if parts[-1] == "key" and len(parts) > 1 and (name.isupper() or any(p in KEY_QUALIFIERS for p in parts[:-1])):
        return "key"
    return None


def value_ok(kind: str, value: str, name: str, quoted: bool) -> bool:
    """Whether `value`, assigned to a name of this `kind`, is a credential rather than code or a stand-in."""
    v = value.strip()
    if len(v) < 4:
        return False
    if not quoted:  # the cheap structural checks first: most unquoted values in code fail them
        if re.search(r"[()\[\]{}<>]|[,;\\]$|^&", v):
            return False  # a call, an index, a trailing separator, an entity
        if v.isdigit() and len(v) < 6:
            return False
        if re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", v) and not detector().is_gibberish(v):
            return False  # `self.password`, `settings.DB_PASSWORD`: names that read as words
    if is_placeholder(v) or is_template(v) or v.lower() in TYPE_WORDS:
        return False
    if v.lower() in name.lower() or re.search(r"\{[^}]*\}|%\(\w+\)[sd]|%[sd]\b|\$\{|\$\(", v):
        return False  # `password: password`, interpolation
    if kind == "key":
        return looks_random(v)
    return not any(c.isspace() for c in v)


NAME = re.compile(r"[A-Za-z_][\w.\-]*")
SECRET_WORD = re.compile(r"pass|pwd|secret|token|key|credential|auth|psk|sas")  # in a lower-cased name
# what follows a secret-named token for a quoted literal to be its value (the name's closing quote, a subscript's
# `]`, a type annotation, an assignment / mapping / comparison / argument separator, a string prefix)
QUOTED_VALUE = re.compile(r"""(?P<nq>["'`]?)\]?
                              (?:[ \t]*:[ \t]*[A-Za-z_][\w\[\]., |]{0,40}?(?=[ \t]*=))?
                              [ \t]*(?P<sep>:=|=>|===?|=|:|,)[ \t]*
                              (?:[rbuRB]{0,2}|new\ String\()
                              (?P<q>["'`])(?P<value>[^"'`\n]{1,500}?)(?P=q)""", re.X)
LINE = re.compile(r"""^[ \t]*(?:-[ \t]+)?(?:(?:export|set|setx|ENV|ARG|readonly|declare(?:[ \t]+-\w+)?)[ \t]+)?
                      ["']?(?P<name>[A-Za-z_][\w.\-]*)["']?(?P<pre>[ \t]*)(?P<sep>=|:)(?P<post>[ \t]*)
                      (?P<value>[^\s'"`][^\s]*)[ \t]*(?:[ \t]\#.*)?$""", re.X)
DOCKER_ENV = re.compile(r"^[ \t]*(?:ENV|setenv)[ \t]+(?P<name>[A-Za-z_][\w.\-]*)[ \t]+(?P<value>[^\s'\"=]\S*)[ \t]*$")
GETTER = re.compile(r"(?:get|getenv|env|setdefault|fetch|default|config|var|define)[ \t]*$", re.I)
XML_ELEMENT = re.compile(r"<(?P<name>[\w.:\-]+)>(?P<value>[^<\s]{4,200})</(?P=name)>")


def named(line: str) -> Iterator[tuple[str, str, int, int]]:
    """Secret-named assignments: `NAME = "value"`, `"name": "value"`, `getenv("NAME", "fallback")`, `NAME=value`,
    `name: value`, `ENV NAME value`, `<password>value</password>`."""
    for t in NAME.finditer(line):
        name = t.group()
        if not SECRET_WORD.search(name.lower()) or (kind := name_kind(name)) is None:
            continue
        m = QUOTED_VALUE.match(line, t.end())
        opening = line[t.start() - 1] if t.start() else ""
        if m is None or m.group("nq") != (opening if opening in "\"'`" and opening else ""):
            continue
        if m.group("sep") == "," and not (m.group("nq") and GETTER.search(line[:t.start() - 1].rstrip(" \t("))
                                          and line[:t.start() - 1].rstrip(" \t").endswith("(")):
            continue  # a value after a comma only as a fallback: `getenv("API_TOKEN", "…")`
        if value_ok(kind, m.group("value"), name, quoted=True):
            yield "assignment", kind, m.start("value"), m.end("value")
    for pattern in (LINE, DOCKER_ENV):
        m = pattern.match(line)
        if m is None or (kind := name_kind(m.group("name"))) is None:
            continue
        value, name = m.group("value"), m.group("name")
        if pattern is LINE and m.group("sep") == "=" and (m.group("pre") or m.group("post")) \
                and re.fullmatch(r"[A-Za-z_]+", value):
            continue  # `password = other_name`: code assigns a variable; INI values of letters only are rare
        if pattern is LINE and m.group("sep") == ":" and not m.group("post"):
            continue  # `key:value` without a space is not YAML's mapping
        if value_ok(kind, value, name, quoted=False):
            yield "unquoted_assignment", kind, m.start("value"), m.end("value")
    if "</" in line:
        for m in XML_ELEMENT.finditer(line):
            kind = name_kind(m.group("name").rsplit(":", 1)[-1])
            if kind and value_ok(kind, m.group("value"), m.group("name"), quoted=True):
                yield "assignment", kind, m.start("value"), m.end("value")


URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{1,30}://(?P<user>[^\s:/@'\"<>]*):(?P<value>[^\s:/@'\"<>]+)@"
                          r"(?=[\w\[])")
CONNECTION = re.compile(r"(?i)(?:^|(?<=[;\"'\s]))(?:password|pwd)[ \t]*=[ \t]*(?P<value>[^;\"'\s,()]+)[ \t]*"
                        r"(?=[;\"'\s]|$)")
CURL_USER = re.compile(r"(?:^|\s)(?:-u|--user)(?:[ \t]+|=)(?P<q>[\"']?)(?P<user>[^\s:\"'$]+):"
                       r"(?P<value>[^\s\"']+)(?P=q)")
MYSQL = re.compile(r"\bmysql(?:dump|admin|import|sh|check|slap|binlog)?\b[^\n]*?\s-p(?P<q>[\"']?)(?P<value>[^\s\"']+)"
                   r"(?P=q)")
SSHPASS = re.compile(r"\bsshpass\s+-p[ \t]*(?P<q>[\"']?)(?P<value>[^\s\"']+)(?P=q)")
CLI_SHORT = re.compile(r"\b(?:redis-cli\b[^\n]*?\s-a|docker\s+login\b[^\n]*?\s-p)[ \t]+(?P<q>[\"']?)"
                       r"(?P<value>[^\s\"']+)(?P=q)")
NETRC = re.compile(r"^[ \t]*(?:machine[ \t]+\S+[ \t]+)?(?:login[ \t]+\S+[ \t]+)?password[ \t]+(?P<value>\S+)[ \t]*$")
CONNINFO = re.compile(r"\b(?:host|user|dbname|port|sslmode)=")
FLAG = re.compile(r"(?<![\w-])--(?P<name>password|passwd|pass|token|api-key|apikey|secret|client-secret|auth-token)"
                  r"(?:=|[ \t]+)(?P<q>[\"']?)(?P<value>[^\s\"'-][^\s\"']*)(?P=q)")
AUTH_HEADER = re.compile(r"(?i)authorization[\"']?[ \t]*[:=,][ \t]*[\"']?(?:bearer|basic|token)[ \t]+"
                         r"(?P<value>[A-Za-z0-9._~+/=\-]{16,})")


def positional(line: str, lower: str) -> Iterator[tuple[str, str, int, int]]:
    """Credentials recognised by their position: URL user-info, connection strings, `curl -u`, `mysql -p`,
    `sshpass -p`, `--password …` flags, `Authorization: Bearer …` headers."""
    if "://" in line and "@" in line:
        for m in URL_USERINFO.finditer(line):
            if value_ok("password", m.group("value"), m.group("user"), quoted=True) and not m.group("value").isdigit():
                yield "url_password", "password", m.start("value"), m.end("value")
    if ("pass" in lower or "pwd" in lower) and (";" in line or CONNINFO.search(line)):
        for m in CONNECTION.finditer(line):
            before, after = line[:m.start()].rstrip(" \t"), line[m.end():m.end() + 1]
            if (before.endswith(";") or after == ";" or CONNINFO.search(line)) \
                    and value_ok("password", m.group("value"), "", quoted=True):
                yield "connection_string", "password", m.start("value"), m.end("value")
    if "-u" in line or "--user" in line:
        for m in CURL_USER.finditer(line):
            if value_ok("password", m.group("value"), m.group("user"), quoted=True) and not m.group("value").isdigit():
                yield "curl_user", "password", m.start("value"), m.end("value")
    if "password" in lower and (m := NETRC.match(line)) and value_ok("password", m.group("value"), "", quoted=False):
        yield "netrc", "password", m.start("value"), m.end("value")
    if "-p" in line or "-a" in line:
        for pattern, rule in ((MYSQL, "mysql_password"), (SSHPASS, "sshpass"), (CLI_SHORT, "cli_password")):
            for m in pattern.finditer(line):
                if value_ok("password", m.group("value"), "", quoted=True):
                    yield rule, "password", m.start("value"), m.end("value")
    if "--" in line:
        for m in FLAG.finditer(line):
            kind = name_kind(m.group("name").replace("-", "_")) or "password"
            if value_ok(kind, m.group("value"), m.group("name"), quoted=True):
                yield "flag", kind, m.start("value"), m.end("value")
    if "authorization" in lower:
        for m in AUTH_HEADER.finditer(line):
            if not is_placeholder(m.group("value")) and not is_template(m.group("value")):
                yield "auth_header", "key", m.start("value"), m.end("value")


def assigned_secrets(line: str) -> Iterator[tuple[str, str, int, int]]:
    """All credentials this module recognises in `line`: (rule, kind, start, end)."""
    lower = line.lower()
    if "=" in line or ":" in line or "," in line or "<" in line or "ENV" in line or "setenv" in line:
        yield from named(line)  # every form it knows has one of these (a separator, `ENV`, `setenv`, `</`)
    yield from positional(line, lower)
