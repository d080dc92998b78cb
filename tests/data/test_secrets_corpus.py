"""No credential survives `codefoundry data curate`: twelve small MIT repositories with secrets in the places
real repositories leak them (Django/Flask settings, `.env`, CI YAML, shell scripts, JSON and INI config,
Dockerfiles, Terraform, PHP, PEM files, READMEs with URLs), curated by the real CLI in a subprocess.

Each file is a template whose `⟦name⟧` slots hold a secret. A kept file must come out exactly as its
template with every slot replaced by `<KEY>` or `<PASSWORD>` (so the code around each secret is intact
and the placeholders, references and public material beside them stay); no secret value may appear
anywhere in the output directory (parquet cells decoded, every other file read as bytes).
"""

from __future__ import annotations

import random
import re
import string
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from conftest import MIT_LICENSE, make_git_repo

ALNUM = string.ascii_letters + string.digits
SLOT = re.compile(r"⟦(\w+)⟧")


def _secrets(rng: random.Random) -> dict[str, tuple[str, str]]:
    """Slot name → (secret value, the token that replaces it)."""
    def r(chars: str, n: int) -> str:
        return "".join(rng.choice(chars) for _ in range(n))

    def pw() -> str:
        return r(string.ascii_letters, 3).capitalize() + r(string.digits, 3) + rng.choice("-_.!") + r(ALNUM, 6)

    def pem(n: int, head: str = "MIIE") -> str:
        body = head + r(ALNUM + "+/", 64 * n)
        return "\n".join(body[i:i + 64] for i in range(0, 64 * n, 64))

    key, password = "<KEY>", "<PASSWORD>"
    values = {
        "aws_id": ("AKIA" + r(string.ascii_uppercase + "234567", 16), key),
        "aws_secret": (r(ALNUM + "/+", 40), key),
        "django": ("django-insecure-" + r("abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)", 50), key),
        "github": ("ghp_" + r(ALNUM, 36), key),
        "npm": ("npm_" + r(ALNUM, 36), key),
        "stripe": ("sk_live_" + r(ALNUM, 24), key),
        "sendgrid": ("SG." + r(ALNUM, 22) + "." + r(ALNUM, 43), key),
        "mailgun": ("key-" + r(string.ascii_lowercase + string.digits, 32), key),
        "slack": (f"xoxb-{rng.randint(10**11, 10**12)}-{rng.randint(10**12, 10**13)}-{r(ALNUM, 24)}", key),
        "hf": ("hf_" + r(string.ascii_letters, 34), key),
        "wandb": (r("0123456789abcdef", 40), key),
        "wp_auth": (r(ALNUM + "!#%&*+-=?@^_", 48), key),
        "rsa_body": (pem(12), key),
        "ssh_body": (pem(5, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAB"), key),
        "ec_body": (pem(2, "MHcCAQEE").replace("\n", "\\n"), key),
    }
    values.update({f"pw{i}": (pw(), password) for i in range(16)})
    return values


CERT = "\n".join(["-----BEGIN CERTIFICATE-----", "MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ",
                  "RTESMBAGA1UEChMJQmFsdGltb3JlMRMwEQYDVQQLEwpDeWJlclRydXN0MSIwIAYD", "-----END CERTIFICATE-----"])

# repository → path → template; paths without a language (`.env`, `.pem`, `id_rsa`) are removed, with no content
REPOS: dict[str, dict[str, str]] = {
    "django-shop": {
        "shop/settings.py": (
            'from pathlib import Path\n\nBASE_DIR = Path(__file__).resolve().parent.parent\n'
            "SECRET_KEY = '⟦django⟧'\nDEBUG = False\nALLOWED_HOSTS = ['shop.acme-corp.io']\n\n"
            "DATABASES = {\n    'default': {\n        'ENGINE': 'django.db.backends.postgresql',\n"
            "        'NAME': 'shop',\n        'USER': 'shop',\n        'PASSWORD': '⟦pw0⟧',\n"
            "        'HOST': 'db.shop.internal',\n    }\n}\n"
            'AWS_ACCESS_KEY_ID = "⟦aws_id⟧"\nAWS_SECRET_ACCESS_KEY = "⟦aws_secret⟧"\n'
            'AWS_STORAGE_BUCKET_NAME = "shop-media"\n# AWS docs example, not a key: AKIAIOSFODNN7EXAMPLE\n'),
        "README.md": ("# Shop\n\nLocal database:\n\n    export DATABASE_URL=postgres://shop:⟦pw1⟧@db.shop.internal:5432/"
                      "shop\n    python manage.py migrate\n\nIn CI the URL is `postgres://${DB_USER}:${DB_PASS}@db/shop`.\n"),
    },
    "node-api": {
        ".env": "NODE_ENV=production\nSTRIPE_SECRET_KEY=⟦stripe⟧\nSENDGRID_API_KEY=⟦sendgrid⟧\n",
        "src/config.js": ("'use strict';\n\nmodule.exports = {\n  port: Number(process.env.PORT || 8080),\n"
                          "  stripeKey: process.env.STRIPE_SECRET_KEY || \"⟦stripe⟧\",\n"
                          "  sendgridKey: process.env.SENDGRID_API_KEY,\n};\n"),
        "config/default.json": ('{\n  "service": "node-api",\n  "mailgunApiKey": "⟦mailgun⟧",\n'
                                '  "mailgunDomain": "mg.acme-corp.io",\n  "requestTimeoutMs": 5000\n}\n'),
    },
    "ci-pipelines": {
        ".github/workflows/deploy.yml": (
            "name: deploy\non:\n  push:\n    branches: [main]\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n"
            "    env:\n      GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}\n      NPM_TOKEN: ⟦npm⟧\n"
            "      DEPLOY_TOKEN: \"⟦github⟧\"\n    steps:\n      - uses: actions/checkout@v4\n"
            "      - run: curl -u deploy:⟦pw2⟧ https://ci.acme-corp.io/job/app/build\n"),
        ".gitlab-ci.yml": ("variables:\n  PGPASSWORD: ⟦pw3⟧\n  POSTGRES_DB: app\n\ntest:\n  image: python:3.11\n"
                           "  script:\n    - mysql -h db -u root -p⟦pw4⟧ -e 'SELECT 1'\n    - pytest -q\n"),
    },
    "ops-scripts": {
        "deploy.sh": ("#!/usr/bin/env bash\nset -euo pipefail\n\nexport AWS_SECRET_ACCESS_KEY=⟦aws_secret⟧\n"
                      "export AWS_DEFAULT_REGION=eu-west-1\n\nmysqldump -uroot -p'⟦pw5⟧' shop > backup.sql\n"
                      'curl --user "admin:⟦pw6⟧" -X POST https://ops.acme-corp.io/api/restart\n'
                      'curl -u "$CI_USER:$CI_TOKEN" https://ops.acme-corp.io/api/status\n'),
    },
    "docker-app": {
        "Dockerfile": ("FROM node:20-slim\nWORKDIR /app\nARG NPM_TOKEN=⟦npm⟧\nENV MYSQL_ROOT_PASSWORD=⟦pw7⟧\n"
                       "COPY package.json .\nRUN npm ci --omit=dev\nCMD [\"node\", \"server.js\"]\n"),
        "docker-compose.yml": ("services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: app\n"
                               "      POSTGRES_PASSWORD: ⟦pw8⟧\n  web:\n    build: .\n    environment:\n"
                               "      DB_PASSWORD: ${POSTGRES_PASSWORD}\n"),
    },
    "keys-and-certs": {
        "deploy/id_rsa": "-----BEGIN RSA PRIVATE KEY-----\n⟦rsa_body⟧\n-----END RSA PRIVATE KEY-----\n",
        "certs/server.pem": (f"{CERT}\n-----BEGIN OPENSSH PRIVATE KEY-----\n⟦ssh_body⟧\n"
                             "-----END OPENSSH PRIVATE KEY-----\n"),
        "app/signing.py": ('"""Sign webhook payloads."""\n\n'
                           'SIGNING_KEY = """-----BEGIN RSA PRIVATE KEY-----\n⟦rsa_body⟧\n'
                           '-----END RSA PRIVATE KEY-----\n"""\n\nCA_CERT = """' + CERT + '\n"""\n\n\n'
                           "def sign(payload: bytes) -> bytes:\n    return _rsa_sign(payload, SIGNING_KEY)\n"),
        "config/service-account.json": ('{\n  "type": "service_account",\n  "project_id": "acme-billing",\n'
                                        '  "private_key": "-----BEGIN EC PRIVATE KEY-----\\n⟦ec_body⟧\\n'
                                        '-----END EC PRIVATE KEY-----\\n"\n}\n'),
    },
    "java-service": {
        "src/main/resources/application.yml": ("server:\n  port: 8080\nspring:\n  datasource:\n"
                                               "    url: jdbc:postgresql://db:5432/orders\n    password: ⟦pw9⟧\n"),
        "appsettings.json": ('{\n  "ConnectionStrings": {\n    "Orders": "Server=tcp:orders.database.windows.net,1433;'
                             'Database=orders;User ID=app;Password=⟦pw10⟧;Encrypt=True;"\n  }\n}\n'),
        "config.ini": "[database]\nhost = db.orders.internal\nuser = orders\npassword = ⟦pw11⟧\n\n[cache]\nttl = 300\n",
    },
    "chat-bot": {
        "bot.py": ('import os\n\nfrom slack_sdk import WebClient\n\nSLACK_BOT_TOKEN = "⟦slack⟧"\n'
                   "ADMIN_PASSWORD = os.environ.get('ADMIN_PASSWORD', '⟦pw12⟧')\n\n\ndef client() -> WebClient:\n"
                   "    # the admin password is ⟦pw12⟧ until rotation\n    return WebClient(token=SLACK_BOT_TOKEN)\n"),
    },
    "ml-train": {
        "train.py": ('import wandb\nfrom huggingface_hub import login\n\nHF_TOKEN = "⟦hf⟧"\n\n\n'
                     'def main() -> None:\n    login(token=HF_TOKEN)\n    wandb.login(key="⟦wandb⟧")\n'
                     '    run = wandb.init(project="code-lm")\n    run.finish()\n'),
    },
    "php-blog": {
        "wp-config.php": ("<?php\ndefine('DB_NAME', 'blog');\ndefine('DB_USER', 'blog');\n"
                          "define('DB_PASSWORD', '⟦pw13⟧');\ndefine('AUTH_KEY', '⟦wp_auth⟧');\n"
                          "$table_prefix = 'wp_';\n"),
    },
    "infra": {
        "main.tf": ('provider "aws" {\n  region     = "eu-west-1"\n  access_key = "⟦aws_id⟧"\n'
                    '  secret_key = "⟦aws_secret⟧"\n}\n\nresource "aws_db_instance" "main" {\n'
                    '  engine   = "postgres"\n  username = "app"\n  password = "⟦pw14⟧"\n}\n'),
    },
    "go-service": {
        "config.go": ('package config\n\n// MongoURL is where the service keeps its sessions.\n'
                      'const MongoURL = "mongodb://app:⟦pw15⟧@mongo.internal:27017/sessions"\n\n'
                      "// Timeout is the per-request deadline in seconds.\nconst Timeout = 30\n"),
    },
}
REMOVED = {".env", "deploy/id_rsa", "certs/server.pem"}  # no language: removed by the language filter
MAY_GO = {"config.ini", "main.tf"}  # not in BigCode's per-extension list: kept or removed, never leaked


def _build(root: Path, secrets: dict[str, tuple[str, str]]) -> None:
    for name, files in REPOS.items():
        rendered = {path: SLOT.sub(lambda m: secrets[m.group(1)][0], text) for path, text in files.items()}
        make_git_repo(root / name, {"LICENSE": MIT_LICENSE, **rendered}, remote=f"https://github.com/acme/{name}.git")


def test_no_secret_survives_curation(tmp_path: Path) -> None:
    secrets = _secrets(random.Random(23))
    _build(tmp_path / "repos", secrets)
    out = tmp_path / "dataset"
    proc = subprocess.run([sys.executable, "-m", "codefoundry", "data", "curate", str(tmp_path / "repos"),
                           "--out", str(out), "-j", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    kept = {(r["repo_name"].rsplit("/", 1)[-1], r["path"]): r["content"]
            for r in pq.read_table(out / "data" / "files").to_pylist()}
    removed = {(r["repo_name"].rsplit("/", 1)[-1], r["path"]): r
               for r in pq.read_table(out / "removed" / "files").to_pylist()}
    for name, files in REPOS.items():
        for path, template in files.items():
            if path in REMOVED or (path in MAY_GO and (name, path) in removed):
                assert (name, path) in removed and removed[(name, path)]["content"] is None, (name, path)
                continue
            assert (name, path) in kept, (name, path, removed.get((name, path), {}).get("reason"))
            expected = SLOT.sub(lambda m: secrets[m.group(1)][1], template)
            assert kept[(name, path)] == expected, (name, path)

    cells = [str(v) for shard in sorted(out.rglob("*.parquet")) for column in pq.read_table(shard).columns
             for v in column.to_pylist() if v is not None]
    others = [p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert others and cells
    for slot, (value, _) in secrets.items():
        pieces = value.split("\n") if "\n" in value else [value]
        for piece in pieces:
            assert not any(piece in cell for cell in cells), slot
            assert not any(piece.encode() in blob for blob in others), slot
