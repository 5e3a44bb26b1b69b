"""A seeded, randomized lifecycle driver for the real server process.

For one seed, `plan(seed, steps)` draws (with `random.Random(seed)`) the run's settings (CPU
burner on or off, REST deadline, starting version policy and labels) and a list of steps:
versions added atomically, slowly (a folder appearing half-written), broken, removed
(rollbacks included); the version policy or a label changed in the config file or through
gRPC `HandleReloadConfigRequest`; a slow REST or gRPC predict with lifecycle steps done
while it runs; clients that disconnect mid-request; gRPC calls cancelled mid-flight or
hitting a short deadline; malformed and oversized REST bodies. The plan depends on the seed
alone and is prefix-stable: the first K steps of a 40-step plan are the K-step plan.

`run_seed` starts `python -m pyserving` on a fresh model folder and config file, keeps a
REST and a gRPC client sending small predicts in the background, runs the steps, and after
each one checks the invariants:

- every request ends (an answer, or a defined error: REST 4xx/5xx JSON, a gRPC status)
  within its deadline plus 1 s (2 s with the burner: this process shares the CPU too);
  clients give up at deadline + 3 s;
- small predicts answer with the value of a version that should be AVAILABLE
  (y = 0.5 x + 10 * version), never a 5xx other than 503/504;
- the AVAILABLE set converges, within a bound, to what the policy wants given the folders
  present that load (`expected_available`);
- no version stays UNLOADING longer than the deadlines of the requests in flight when it
  started unloading, plus a margin;
- the process is alive and, after each step, answers `GET /v1/models/m` within 1 s. While
  a big request of ours runs, the status may stall a few seconds (the longest stalls are
  reported); 10 s without any answer (20 s with the burner) is a frozen server, and fails
  the seed with the server's CPU use and a py-spy dump of its threads;
- once idle at the end: `pyserving_servable_handles_in_use` sums to 0 (when the server
  exports it) and the server uses under 10 % of one core over 2 s.

A failure prints the seed's settings, the step list with the failing step marked, how to
replay it, and the tail of the server log.

    python tests/lifecycle_fuzz.py --seeds 0-199 --steps 40       # long local run
    python tests/lifecycle_fuzz.py --seed 17 --steps 9 --verbose   # replay one failure

`--profile ci|long` picks what seeds may draw (`long`, the default: bigger requests and
some short deadlines). `--budget SECONDS` starts no new seed after that long.
`--server-src DIR` (or $PYSERVING_SERVER_SRC, also read by the tests) runs the server from
another tree's src/, e.g. a `git archive` of an older commit, to see what a change fixed.
`tests/integration/test_lifecycle_random.py` runs a few seeds in CI.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import requests  # noqa: E402

from support import ServerProcess  # noqa: E402

MODEL = "m"
MAX_VERSION = 9
LABELS = ("stable", "canary")
MAX_BODY_BYTES = 128 << 20           # --rest_api_max_body_bytes; the largest slow body is 120 MB
POLL_SECONDS = 1                     # file system and config file poll periods
# A folder change the served set does not show (a version outside the policy, a failed one
# removed) has no signal to wait on; two changes closer than one poll apart could be seen
# by the server as one, so consecutive changes are kept this far apart.
MUTATION_GAP_SECONDS = POLL_SECONDS + 0.5
SMALL_BODY = b'{"instances": [1.0, 2.0]}'
METRICS_PATH = "/monitoring/prometheus/metrics"

# Per profile: what the seeds may draw. "ci" keeps each seed short and every slow request
# well inside its deadline; "long" adds bigger requests and short deadlines.
PROFILES: dict[str, dict[str, Any]] = {
    "ci": {
        "rest_timeouts_ms": (30000,),
        "rest_floats": (3_000_000, 3_000_000, 10_000_000),
        "grpc_floats": (30_000_000,),
        "grpc_examples": (2_000_000, 4_000_000),
        "burner_probability": 0.5,
    },
    "long": {
        "rest_timeouts_ms": (30000, 30000, 30000, 8000),
        "rest_floats": (3_000_000, 3_000_000, 10_000_000, 20_000_000, 30_000_000),
        "grpc_floats": (30_000_000, 60_000_000),
        "grpc_examples": (2_000_000, 4_000_000),
        "burner_probability": 0.5,
    },
}

STEP_WEIGHTS = {
    "add": 14, "add_slow": 8, "add_broken": 6, "remove": 12,
    "policy": 6, "label": 5, "grpc_reload": 5,
    "slow_request": 12, "disconnect": 6, "grpc_cancel": 4, "grpc_deadline": 4,
    "malformed": 4, "too_big": 3,
}

MALFORMED_BODIES = (
    b'{"instances": [1.0, 2.0',
    b"not json at all",
    b'{"instances": "x"}',
    b'{"instances": [[1.0], [2.0, 3.0]]}',
    b'{"inputs": {"nope": [1.0]}}',
    b"",
    b'{"instances": [1.0, NaN, "a"]}',
)


def intercept(version: int) -> float:
    """Each stored version v serves y = 0.5 x + 10 v, so an answer names its version."""
    return 10.0 * version


def version_of(y_at_1: float) -> int | None:
    v = round((y_at_1 - 0.5) / 10.0)
    return v if abs(0.5 + intercept(v) - y_at_1) < 1e-3 else None


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Policy:
    kind: str                       # "latest" | "all" | "specific"
    num: int = 1                    # latest
    versions: tuple[int, ...] = ()  # specific

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest{{{self.num}}}"
        if self.kind == "all":
            return "all{}"
        return "specific{" + ",".join(map(str, self.versions)) + "}"

    def text(self) -> str:
        if self.kind == "latest":
            return f"model_version_policy {{ latest {{ num_versions: {self.num} }} }}"
        if self.kind == "all":
            return "model_version_policy { all {} }"
        return "model_version_policy { specific { " + " ".join(f"versions: {v}" for v in self.versions) + " } }"

    def select(self, present: Iterable[int]) -> set[int]:
        found = sorted(set(present), reverse=True)
        if self.kind == "all":
            return set(found)
        if self.kind == "specific":
            return {v for v in found if v in self.versions}
        return set(found[: max(1, self.num)])


@dataclass(frozen=True)
class Config:
    policy: Policy
    labels: tuple[tuple[str, int], ...] = ()

    def label_map(self) -> dict[str, int]:
        return dict(self.labels)

    def with_label(self, label: str, version: int | None) -> "Config":
        labels = {k: v for k, v in self.labels if k != label}
        if version is not None:
            labels[label] = version
        return Config(self.policy, tuple(sorted(labels.items())))

    def __str__(self) -> str:
        labels = ",".join(f"{k}->{v}" for k, v in self.labels) or "-"
        return f"{self.policy} labels={labels}"

    def text(self, base_path: Path) -> str:
        labels = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in self.labels)
        return (f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{base_path}" '
                f'model_platform: "tensorflow" {self.policy.text()} {labels} }} }}\n')


@dataclass(frozen=True)
class Step:
    kind: str
    args: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.args).get(key, default)

    def __str__(self) -> str:
        parts = []
        for k, v in self.args:
            if isinstance(v, tuple) and v and isinstance(v[0], Step):
                v = "[" + ", ".join(map(str, v)) + "]"
            elif k == "labels":
                v = ",".join(f"{label}->{version}" for label, version in v) or "-"
            parts.append(f"{k}={v}")
        return " ".join([self.kind, *parts])


def _step(kind: str, **args: Any) -> Step:
    return Step(kind, tuple(args.items()))


@dataclass(frozen=True)
class Plan:
    seed: int
    profile: str
    burner: bool
    rest_timeout_ms: int
    initial_versions: tuple[int, ...]
    initial_config: Config
    steps: tuple[Step, ...]

    def describe(self, mark: int | None = None) -> str:
        lines = [f"seed {self.seed} (profile {self.profile}): burner={'on' if self.burner else 'off'} "
                 f"rest_api_timeout_in_ms={self.rest_timeout_ms} initial versions="
                 f"{list(self.initial_versions)} config: {self.initial_config}"]
        for i, step in enumerate(self.steps):
            arrow = "->" if i == mark else "  "
            lines.append(f"  {arrow} {i:2d}: {step}")
        return "\n".join(lines)


class _PlanState:
    """What the generator knows: the folders it created. Which version loads, and whether a
    reload is accepted, are decided by the server at run time and checked then."""

    def __init__(self, rng: random.Random, profile: dict[str, Any], burner: bool, versions: Iterable[int],
                 config: Config) -> None:
        self.rng = rng
        self.profile = profile
        self.burner = burner
        self.present: dict[int, str] = {v: "good" for v in versions}
        self.config = config

    def absent(self) -> list[int]:
        return [v for v in range(1, MAX_VERSION + 1) if v not in self.present]

    def pick_new(self, newest: bool = False) -> int | None:
        absent = self.absent()
        if not absent:
            return None
        top = max(self.present, default=0)
        above = [v for v in absent if v > top]
        if above and (newest or self.rng.random() < 0.7):
            return min(above)
        return self.rng.choice(absent)

    def pick_existing(self) -> int | None:
        if not self.present:
            return None
        if self.rng.random() < 0.5:
            return max(self.present)  # a rollback
        return self.rng.choice(sorted(self.present))

    def random_policy(self) -> Policy:
        r = self.rng.random()
        if r < 0.45:
            return Policy("latest", self.rng.choice((1, 1, 2, 3)))
        if r < 0.7:
            return Policy("all")
        pool = sorted(set(self.present) | {self.rng.randint(1, MAX_VERSION)})
        chosen = self.rng.sample(pool, k=min(len(pool), self.rng.randint(1, 3)))
        return Policy("specific", versions=tuple(sorted(chosen)))

    def random_label_move(self) -> tuple[str, int | None]:
        label = self.rng.choice(LABELS)
        if self.rng.random() < 0.15:
            return label, None
        if self.present and self.rng.random() < 0.8:
            return label, self.rng.choice(sorted(self.present))
        return label, self.rng.randint(1, MAX_VERSION)

    def folder_step(self) -> Step:
        """One add / add_slow / add_broken / remove."""
        kinds = ["add", "add_slow", "add_broken", "remove"]
        return self.make(self.rng.choices(kinds, [STEP_WEIGHTS[k] for k in kinds])[0])

    def make(self, kind: str) -> Step:
        rng = self.rng
        if kind in ("add", "add_slow", "add_broken"):
            v = self.pick_new()
            if v is None:
                return self.make("remove")
            self.present[v] = {"add": "good", "add_slow": "slow", "add_broken": "broken"}[kind]
            if kind == "add_slow":
                return _step(kind, v=v, order=rng.randrange(1000), pause_ms=rng.choice((100, 300, 600)))
            return _step(kind, v=v)
        if kind == "remove":
            if len(self.present) <= 1 and rng.random() < 0.75:
                return self.make("add")
            v = self.pick_existing()
            if v is None:
                return self.make("add")
            del self.present[v]
            return _step(kind, v=v)
        if kind in ("policy", "label", "grpc_reload"):
            config = self.config
            if kind in ("policy", "grpc_reload") and (kind == "policy" or rng.random() < 0.6):
                config = Config(self.random_policy(), config.labels)
            if kind == "label" or (kind == "grpc_reload" and rng.random() < 0.6):
                label, version = self.random_label_move()
                config = config.with_label(label, version)
            self.config = config
            return _step(kind, policy=config.policy, labels=config.labels)
        if kind == "slow_request":
            api = rng.choice(("rest", "rest", "grpc_predict", "grpc_regress"))
            sizes = self.profile[{"rest": "rest_floats", "grpc_predict": "grpc_floats",
                                  "grpc_regress": "grpc_examples"}[api]]
            if self.burner and api == "rest":
                # Sharing the CPU, a REST body over 10 M floats outlasts any sensible deadline.
                sizes = [n for n in sizes if n <= 10_000_000]
            size = {"examples" if api == "grpc_regress" else "floats": rng.choice(sizes)}
            if rng.random() < 0.5:  # the rollback pattern: a new version comes and goes while it runs
                v = self.pick_new(newest=True)
                during: tuple[Step, ...] = ((self.make("remove"),) if v is None
                                            else (_step("add", v=v), _step("remove", v=v)))
            else:
                during = tuple(self.folder_step() for _ in range(rng.randint(1, 2)))
            return _step(kind, api=api, **size, during=during)
        if kind == "disconnect":
            return _step(kind, floats=rng.choice((100_000, 3_000_000)),
                         sent=rng.choice(("headers", "part", "all")))
        if kind == "grpc_cancel":
            return _step(kind, floats=rng.choice(self.profile["grpc_floats"]),
                         after_ms=rng.choice((0, 50, 200, 500, 1000)))
        if kind == "grpc_deadline":
            return _step(kind, floats=rng.choice(self.profile["grpc_floats"]),
                         deadline_ms=rng.choice((1, 50, 300, 1000)))
        if kind == "malformed":
            return _step(kind, body=rng.randrange(len(MALFORMED_BODIES)))
        if kind == "too_big":
            return _step(kind, how=rng.choice(("declared", "chunked")))
        raise ValueError(kind)


def plan(seed: int, steps: int, profile: str = "long") -> Plan:
    """The seed's settings and its first `steps` steps (a pure function of its arguments)."""
    settings = PROFILES[profile]
    rng = random.Random(seed)
    burner = rng.random() < settings["burner_probability"]
    rest_timeout_ms = rng.choice(settings["rest_timeouts_ms"])
    initial = (1,) if rng.random() < 0.6 else (1, 2)
    policy = rng.choice((Policy("latest", 1), Policy("latest", 1), Policy("latest", 2), Policy("all")))
    labels = (("stable", 1),) if rng.random() < 0.5 else ()
    config = Config(policy, labels)
    state = _PlanState(rng, settings, burner, initial, config)
    kinds = list(STEP_WEIGHTS)
    weights = [STEP_WEIGHTS[k] for k in kinds]
    out = tuple(state.make(rng.choices(kinds, weights)[0]) for _ in range(steps))
    return Plan(seed, profile, burner, rest_timeout_ms, initial, config, out)


# ---------------------------------------------------------------------------- model store


@dataclass(frozen=True)
class Store:
    """Versions 1..MAX_VERSION of half_plus_two (intercept 10 v) and a broken version."""

    root: Path

    def good(self, v: int) -> Path:
        return self.root / "good" / str(v)

    @property
    def broken(self) -> Path:
        return self.root / "broken" / "1"


def build_store(root: Path) -> Store:
    import modelgen  # noqa: PLC0415 - TensorFlow only when a store is built

    store = Store(root)
    for v in range(1, MAX_VERSION + 1):
        if not store.good(v).exists():
            modelgen.make_half_plus_two(root / "good", v, intercept=intercept(v))
    if not store.broken.exists():
        modelgen.make_broken_version(root / "broken", 1)
    return store


def install_atomic(src: Path, dst: Path) -> None:
    tmp = dst.parent / f".tmp-{dst.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    os.rename(tmp, dst)


def install_slowly(src: Path, dst: Path, order: int, pause: float) -> None:
    """Create the folder, then copy its files one by one with pauses, in a shuffled order:
    the server sees the version half-written."""
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    random.Random(order).shuffle(files)
    dst.mkdir()
    for rel in files:
        time.sleep(pause)  # the point of this copy: the folder stays half-written a while
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)


def remove_version(path: Path) -> None:
    # Rename first: the server never sees a folder whose files are half deleted.
    gone = path.parent / f".gone-{path.name}-{time.monotonic_ns()}"
    os.rename(path, gone)
    shutil.rmtree(gone)


# ---------------------------------------------------------------------------- expectations


def expected_available(present: dict[int, str], failed: set[int], policy: Policy, previous: set[int]) -> set[int]:
    """The AVAILABLE set the server must settle on (availability preserving, as TF Serving).

    The policy selects among every version folder present, loadable or not. The selected
    versions that load are served; a selected version still served (its folder went and came
    back meanwhile) is kept as it is, never loaded again. If none of them loads, the highest
    version served before stays (a version that fails never displaces the one being served);
    if the policy selects nothing, nothing is served.
    """
    selected = policy.select(present)
    loadable = {v for v in selected if v in previous or (present[v] != "broken" and v not in failed)}
    if loadable:
        return loadable
    if not selected:
        return set()
    return {max(previous)} if previous else set()


@dataclass
class Window:
    """What an answer may say while a step runs: the versions that may be served, whether
    none may be, and which versions each label may point at."""

    served: frozenset[int]
    may_be_empty: bool
    labels: dict[str, frozenset[int]]
    label_missing: frozenset[str]

    def union(self, other: "Window") -> "Window":
        labels = {k: self.labels.get(k, frozenset()) | other.labels.get(k, frozenset())
                  for k in set(self.labels) | set(other.labels)}
        return Window(self.served | other.served, self.may_be_empty or other.may_be_empty,
                      labels, self.label_missing | other.label_missing)


def window_of(served: set[int], config: Config) -> Window:
    labels = config.label_map()
    return Window(frozenset(served), not served, {k: frozenset({v}) for k, v in labels.items()},
                  frozenset(k for k in LABELS if k not in labels))


class Failure(Exception):
    def __init__(self, category: str, message: str) -> None:
        super().__init__(f"[{category}] {message}")
        self.category = category
        self.message = message


# ---------------------------------------------------------------------------- helpers


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)$', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            continue
    return out


def metric_values(url: str, name: str, timeout: float = 5.0) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of `name` the server at `url` exports."""
    r = requests.get(url + METRICS_PATH, timeout=timeout)
    r.raise_for_status()
    return [(labels, value) for n, labels, value in parse_metrics(r.text) if n == name]


def diagnose(proc: subprocess.Popen) -> list[str]:
    """For a server that stopped answering: is it spinning or blocked, and where?"""
    if proc.poll() is not None:
        return [f"diagnosis: the server exited with status {proc.returncode}"]
    before, start = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(1.0)  # the measurement window
    notes = [f"diagnosis: the server used {(cpu_seconds(proc.pid) - before) / (time.monotonic() - start):.0%} "
             "of a core over the last second"]
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if os.path.exists(spy):
        try:
            dump = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [*notes, f"diagnosis: py-spy dump failed: {exc!r}"]
        # The main thread (the event loop) and the threads running Python code.
        blocks = re.split(r"\n(?=Thread )", dump.stdout or dump.stderr)
        keep = [b for b in blocks[1:] if '"MainThread"' in b or "(active" in b]
        notes.append("diagnosis: py-spy dump of the server (event loop and busy threads):\n"
                     + "\n".join(keep or blocks)[-5000:])
    return notes


def server_env(server_src: str | None = None) -> dict[str, str] | None:
    """The environment running the server from `server_src` (a tree's src/ directory), or
    from $PYSERVING_SERVER_SRC; None: the checkout's own code."""
    src = server_src or os.environ.get("PYSERVING_SERVER_SRC")
    return {"PYTHONPATH": src} if src else None


def parse_allowance(floats: int, slow: float) -> float:
    """For a server without `pyserving_servable_handles_in_use`: how long after its body is
    sent a REST request of `floats` floats surely holds its version (it takes the handle
    once the body is read and parsed, ~20 ms per million floats here; generous)."""
    return 0.5 + 0.1 * floats / 1e6 * slow


def stop_server(server: ServerProcess) -> None:
    """SIGTERM, then SIGKILL: a frozen server ignores SIGTERM."""
    if server.proc is None or server.proc.poll() is not None:
        return
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(15)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rest_body(floats: int, _cache: dict[int, bytes] = {}) -> bytes:  # noqa: B006 - a cache
    body = _cache.get(floats)
    if body is None:
        body = b'{"instances": [' + b",".join([b"1.0"] * floats) + b"]}"
        _cache.clear()  # one big body at a time: they are up to 120 MB
        _cache[floats] = body
    return body


def grpc_predict_request(floats: int, version: int | None = None, label: str | None = None) -> Any:
    from tensorflow.core.framework import types_pb2  # noqa: PLC0415
    from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add(size=floats)
    tensor.tensor_shape.dim.add(size=1)
    if floats <= 16:
        tensor.float_val.extend([1.0, 2.0][:floats] + [1.0] * max(0, floats - 2))
    else:
        tensor.tensor_content = b"\x00\x00\x80\x3f" * floats  # 1.0f, little-endian
    return request


def grpc_regress_request(examples: int) -> Any:
    """A Regress of `examples` tf.Examples (x = 1.0) through half_plus_two's `regress_x_to_y`.

    The server serializes every example in Python while it holds its version: about 1 us
    each, so a few million hold the version for seconds, where a Predict (whose tensor is
    decoded and run at C speed) holds it ~2 s even at the 60 M floats a request may carry."""
    from tensorflow_serving.apis import input_pb2, regression_pb2  # noqa: PLC0415

    one = input_pb2.ExampleList()
    one.examples.add().features.feature["x"].float_list.value.append(1.0)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "regress_x_to_y"
    # Parsing N copies of one serialized example is far faster than building N messages.
    request.input.example_list.ParseFromString(one.SerializeToString() * examples)
    return request


FIRST_PREDICTION = re.compile(rb'"predictions"\s*:\s*\[\s*\[?\s*(-?[0-9.eE+-]+)')


@dataclass
class Tracked:
    """A request the driver sent itself; the UNLOADING bound reads its deadline."""

    what: str
    start: float
    deadline: float          # absolute, time.monotonic()
    end: float | None = None


class BurnerGroup:
    """One busy-looping process per core, each exiting by itself after `seconds`."""

    def __init__(self, seconds: float) -> None:
        code = ("import time\nend = time.monotonic() + %r\nwhile time.monotonic() < end:\n    pass\n" % seconds)
        self.procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
                      for _ in range(os.cpu_count() or 1)]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(10)


# ---------------------------------------------------------------------------- the run


@dataclass
class SeedResult:
    plan: Plan
    steps_run: int
    seconds: float
    failure: Failure | None = None
    failed_step: int | None = None
    log_tail: str = ""
    notes: list[str] = field(default_factory=list)
    stalls: list[tuple[float, int | None, list[str]]] = field(default_factory=list)
    server_src: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def report(self) -> str:
        if self.ok:
            return f"seed {self.plan.seed}: ok ({self.steps_run} steps, {self.seconds:.0f} s)"
        where = "setup" if self.failed_step is None else f"step {self.failed_step}"
        if self.failed_step is not None and self.failed_step >= len(self.plan.steps):
            where = "the idle checks after the last step"
        replay_steps = len(self.plan.steps) if self.failed_step is None else min(
            len(self.plan.steps), self.failed_step + 1)
        return "\n".join([
            f"FAILED seed {self.plan.seed} at {where} after {self.seconds:.0f} s: {self.failure}",
            self.plan.describe(self.failed_step),
            f"replay: python tests/lifecycle_fuzz.py --seed {self.plan.seed} --steps {replay_steps} "
            f"--profile {self.plan.profile} --verbose" + (f" --server-src {self.server_src}" if self.server_src else ""),
            *self.notes,
            "server log (tail):",
            self.log_tail,
        ])


class Runner:
    """Runs one plan: the server, a model of what it should serve (`present`, `failed`,
    `config`, `available`, and `window`: what answers may say meanwhile), the background
    clients, the steps (`step_<kind>`) and the checks after each (`after_step`)."""

    def __init__(self, p: Plan, store: Store, workdir: Path, server_src: str | None = None,
                 verbose: bool = False) -> None:
        self.plan = p
        self.store = store
        self.workdir = workdir
        self.base = workdir / MODEL
        self.config_path = workdir / "models.config"
        self.server_src = server_src
        self.verbose = verbose
        self.rest_timeout = p.rest_timeout_ms / 1000.0
        self.slow = 2.0 if p.burner else 1.0  # CPU shared with a burner: bounds scale
        # While our big requests run, the server may be slow to answer; past this long
        # without any answer it is frozen.
        self.freeze_seconds = 10.0 * self.slow
        self.converge_seconds = 15.0 * self.slow
        self.unload_margin = 3.0 * self.slow
        # "Within its deadline plus 1 s", as this process measures it; with a burner this
        # process gets half the CPU too, and its own lateness is not the server's.
        self.grace = 1.0 * self.slow
        # model of the server
        self.present: dict[int, str] = {}
        self.failed: set[int] = set()
        self.config = p.initial_config
        self.available: set[int] = set()
        self.window = window_of(set(), self.config)
        # run state
        self.server: ServerProcess | None = None
        self.burner: BurnerGroup | None = None
        self.stop_clients = threading.Event()
        self.client_threads: list[threading.Thread] = []
        self.client_failures: list[Failure] = []
        self.client_counts: dict[str, int] = {}
        self.counts_lock = threading.Lock()
        self.tracked: list[Tracked] = []
        self.unloading_since: dict[int, float] = {}
        self.log_index = 0
        self.last_mutation = 0.0
        self.config_writes = 0
        self.stall_since: float | None = None
        self.stalls: list[tuple[float, int | None, list[str]]] = []  # (seconds, step, big requests)
        self.step_index: int | None = None
        self.paused = threading.Event()   # set: the background clients hold off
        self.idle_clients = [threading.Event(), threading.Event()]
        self._channel: Any = None

    # -- logging -------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.verbose:
            print(f"    [{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- setup ---------------------------------------------------------------------
    def start(self) -> None:
        self.base.mkdir(parents=True)
        for v in self.plan.initial_versions:
            install_atomic(self.store.good(v), self.base / str(v))
            self.present[v] = "good"
        self.write_config(self.config)
        monitoring = self.workdir / "monitoring.config"
        monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
        if self.plan.burner:
            self.burner = BurnerGroup(seconds=1800)
        self.server = ServerProcess(
            f"--model_config_file={self.config_path}",
            f"--model_config_file_poll_wait_seconds={POLL_SECONDS}",
            f"--file_system_poll_wait_seconds={POLL_SECONDS}",
            "--max_num_load_retries=0",
            f"--rest_api_timeout_in_ms={self.plan.rest_timeout_ms}",
            f"--monitoring_config_file={monitoring}",
            f"--rest_api_max_body_bytes={MAX_BODY_BYTES}",
            "--allow_version_labels_for_unavailable_models",
            env=server_env(self.server_src),
        )
        self.server.start(timeout=180)
        self.last_mutation = time.monotonic()
        self.available = expected_available(self.present, self.failed, self.config.policy, set())
        self.window = window_of(self.available, self.config)
        self.converge()
        for target in (self.rest_client, self.grpc_client):
            t = threading.Thread(target=target, daemon=True, name=target.__name__)
            t.start()
            self.client_threads.append(t)

    def diagnose(self, notes: list[str]) -> None:
        if self.server is not None and self.server.proc is not None:
            notes.extend(diagnose(self.server.proc))

    def close(self) -> None:
        self.stop_clients.set()
        if self.server is not None:
            stop_server(self.server)
        for t in self.client_threads:
            t.join(15)
        if self._channel is not None:
            self._channel.close()
        if self.burner is not None:
            self.burner.stop()

    # -- plumbing --------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def channel(self) -> Any:
        import grpc  # noqa: PLC0415

        if self._channel is None:
            assert self.server is not None
            self._channel = grpc.insecure_channel(self.server.grpc_target, options=[
                ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        return self._channel

    def write_config(self, config: Config) -> None:
        self.config_writes += 1
        # The comment makes every write differ from the last, so the poller applies it
        # even when it equals the config a gRPC reload installed meanwhile.
        text = f"# write {self.config_writes}\n" + config.text(self.base)
        tmp = self.workdir / "models.config.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def mark(self) -> int:
        assert self.server is not None
        return len(self.server.lines)

    def log_tail(self, n: int = 60) -> str:
        if self.server is None:
            return ""
        return "\n".join(self.server.lines[-n:])

    def status(self, timeout: float = 1.0) -> dict[int, str]:
        r = requests.get(f"{self.url}/v1/models/{MODEL}", timeout=timeout)
        if r.status_code == 404:
            return {}
        if r.status_code != 200:
            raise Failure("status", f"GET /v1/models/{MODEL} answered {r.status_code}: {r.text[:300]}")
        return {int(s["version"]): s["state"] for s in r.json()["model_version_status"]}

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        r = requests.get(self.url + METRICS_PATH, timeout=5)
        if r.status_code != 200:
            raise Failure("metrics", f"GET {METRICS_PATH} answered {r.status_code}")
        return parse_metrics(r.text)

    # -- invariants while waiting ------------------------------------------------------------
    def check_alive(self) -> None:
        assert self.server is not None and self.server.proc is not None
        code = self.server.proc.poll()
        if code is not None:
            raise Failure("exited", f"the server exited with status {code}")

    def probe(self, strict: bool) -> dict[int, str] | None:
        """GET the model status with a 1 s timeout. Strict (nothing of ours in flight): it
        must answer. Otherwise a miss starts a stall, recorded when it ends; a stall
        longer than `freeze_seconds` fails the run."""
        self.check_alive()
        start = time.monotonic()
        try:
            states = self.status(timeout=1.0)
        except (requests.Timeout, requests.ConnectionError) as exc:
            if self.stall_since is None:
                self.stall_since = start
            stalled = time.monotonic() - self.stall_since
            if strict or stalled > self.freeze_seconds:
                raise Failure("unresponsive", f"GET /v1/models/{MODEL}: no answer within 1 s "
                              f"({type(exc).__name__}); no answer at all for {stalled:.1f} s") from None
            return None
        if self.stall_since is not None:
            busy = [r.what for r in self.tracked if r.end is None or r.end > self.stall_since]
            self.stalls.append((time.monotonic() - self.stall_since, self.step_index, busy))
            self.stall_since = None
        return states

    def scan_log(self) -> None:
        """Track UNLOADING versions from the log and enforce the bound on them."""
        assert self.server is not None
        entries = self.server.lines_with_times(self.log_index)
        self.log_index += len(entries)
        for t, line in entries:
            m = re.search(r"Servable \{name: " + MODEL + r" version: (\d+)\} is (\w+)", line)
            if not m:
                continue
            v, state = int(m.group(1)), m.group(2)
            if state == "UNLOADING":
                self.unloading_since[v] = t
            elif state == "END":
                self.unloading_since.pop(v, None)
        now = time.monotonic()
        for v, since in self.unloading_since.items():
            bound = self.unload_bound(since)
            if now > bound:
                holders = [f"{r.what} (deadline {r.deadline - since:+.1f} s, "
                           f"{'ended %+.1f s' % (r.end - since) if r.end else 'still running'})"
                           for r in self.tracked if r.start <= since and (r.end is None or r.end >= since)]
                raise Failure("stuck-unloading", (
                    f"version {v} UNLOADING for {now - since:.1f} s; bound {bound - since:.1f} s "
                    f"(requests in flight when it started unloading: {holders or 'none of ours'})"))

    def unload_bound(self, since: float) -> float:
        """UNLOADING may last until every request in flight when it began has ended or
        passed its deadline, plus a margin for the unload itself."""
        latest = since
        for r in self.tracked:
            if r.start <= since and (r.end is None or r.end >= since):
                latest = max(latest, min(r.deadline, r.end) if r.end is not None else r.deadline)
        return latest + self.unload_margin

    def check_clients(self) -> None:
        if self.client_failures:
            raise self.client_failures[0]

    def wait_until(self, done: Callable[[], Any], timeout: float, what: str, period: float = 0.2) -> Any:
        """Poll `done` until it returns a true value, probing the server between polls."""
        deadline = time.monotonic() + timeout
        while True:
            result = done()
            if result:
                return result
            self.scan_log()
            self.check_clients()
            self.probe(strict=False)
            if time.monotonic() > deadline:
                raise Failure("timeout", f"{what}: not within {timeout:.0f} s")
            time.sleep(period)  # a bounded poll: the next look at the server

    def wait_log(self, pattern: str, start: int, timeout: float, what: str) -> re.Match[str]:
        assert self.server is not None
        rx = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for _, line in self.server.lines_with_times(start):  # type: ignore[union-attr]
                m = rx.search(line)
                if m:
                    return m
            return None

        return self.wait_until(found, timeout, what, period=0.05)

    def converge(self) -> None:
        """Wait until the server's AVAILABLE set is `self.available` and nothing is in transit."""
        want = self.available
        last: dict[int, str] | None = None
        extra = max((r.deadline - time.monotonic() for r in self.tracked if r.end is None), default=0.0)
        deadline = time.monotonic() + self.converge_seconds + max(0.0, extra)
        while True:
            self.scan_log()
            self.check_clients()
            states = self.probe(strict=False)
            if states is not None:
                last = states
                got = {v for v, s in states.items() if s == "AVAILABLE"}
                moving = {v: s for v, s in states.items() if s in ("START", "LOADING", "UNLOADING")}
                if got == want and not moving:
                    return
            if time.monotonic() > deadline:
                raise Failure("convergence", (
                    f"AVAILABLE should be {sorted(want)} (folders {self.folders_text()}, "
                    f"{self.config.policy}, failed loads {sorted(self.failed)}); the server says {last}"))
            time.sleep(0.1)  # a bounded poll until the states settle

    def folders_text(self) -> str:
        return "{" + ", ".join(f"{v}:{k}" for v, k in sorted(self.present.items())) + "}"

    # -- background clients --------------------------------------------------------------------
    def count(self, key: str) -> None:
        with self.counts_lock:
            self.client_counts[key] = self.client_counts.get(key, 0) + 1

    def judge(self, who: str, target: tuple[str, Any], before: Window, code: str, version: int | None,
              error: str) -> None:
        """Is this small answer allowed? `code` is "ok" or the error's name."""
        w = before.union(self.window)
        kind, value = target
        self.count(f"{who}:{code}")
        if code == "ok":
            if version is None:
                raise Failure("wrong-answer", f"{who} {kind}={value}: an answer from no stored version")
            if version not in w.served:
                raise Failure("wrong-answer", f"{who} {kind}={value}: answered by version {version}, "
                              f"outside the versions that may be served {sorted(w.served)}")
            if kind == "version" and version != value:
                raise Failure("wrong-answer", f"{who} asked for version {value}, version {version} answered")
            if kind == "label" and version not in w.labels.get(value, frozenset()):
                raise Failure("wrong-answer", f"{who} label {value}: version {version} answered, "
                              f"the label points at {sorted(w.labels.get(value, ()))}")
            return
        if code in ("deadline", "unavailable"):
            return  # 504 / 503: defined answers
        if code == "not_found":
            if kind == "latest" and not w.may_be_empty:
                raise Failure("wrong-answer", f"{who}: no version served, while {sorted(w.served)} "
                              f"should stay available: {error}")
            return
        if code == "invalid" and kind == "label" and "Unrecognized servable version label" in error:
            if value not in w.label_missing:
                raise Failure("wrong-answer", f"{who}: label {value} unknown, but it is configured: {error}")
            return
        raise Failure("bad-status", f"{who} {kind}={value}: {code}: {error[:300]}")

    def hold(self, client: int) -> bool:
        """While paused, say so (`idle_clients`) and wait; True if the client waited."""
        if not self.paused.is_set():
            return False
        self.idle_clients[client].set()
        self.stop_clients.wait(0.05)  # paused: look again shortly
        return True

    def pause_clients(self) -> None:
        """Hold the background clients off once their request in flight has ended."""
        self.paused.set()
        deadline = time.monotonic() + self.rest_timeout + 5
        for idle, thread in zip(self.idle_clients, self.client_threads):
            while not idle.wait(0.1) and thread.is_alive():
                self.check_clients()
                if time.monotonic() > deadline:
                    raise Failure("hang", f"the background {thread.name} did not end its request")

    def resume_clients(self) -> None:
        for idle in self.idle_clients:
            idle.clear()
        self.paused.clear()

    def quiesce(self) -> None:
        """Pause the background clients and wait until the server has no request in flight
        (one whose client went away may still run), per `pyserving_in_flight_requests`."""
        self.pause_clients()
        try:
            def in_flight() -> float | None:
                values = [v for name, _, v in self.metrics() if name == "pyserving_in_flight_requests"]
                return sum(values) if values else None

            if in_flight() is not None:
                self.wait_until(lambda: in_flight() == 0, self.rest_timeout + 5 * self.slow,
                                "no request in flight on the server", period=0.1)
        finally:
            self.resume_clients()

    def pick_target(self, rng: random.Random) -> tuple[str, Any]:
        r = rng.random()
        if r < 0.75:
            return ("latest", None)
        if r < 0.9:
            return ("version", rng.randint(1, MAX_VERSION))
        return ("label", rng.choice(LABELS))

    def rest_client(self) -> None:
        rng = random.Random(self.plan.seed * 31 + 1)
        session = requests.Session()
        while not self.stop_clients.is_set():
            if self.hold(0):
                continue
            target = self.pick_target(rng)
            path = {"latest": f"/v1/models/{MODEL}:predict",
                    "version": f"/v1/models/{MODEL}/versions/{target[1]}:predict",
                    "label": f"/v1/models/{MODEL}/labels/{target[1]}:predict"}[target[0]]
            before = self.window
            start = time.monotonic()
            try:
                r = session.post(self.url + path, data=SMALL_BODY, timeout=(2, self.rest_timeout + 3))
            except requests.RequestException as exc:
                if self.stop_clients.is_set():
                    return
                self.client_failures.append(Failure("hang" if isinstance(exc, requests.Timeout) else "connection", (
                    f"REST {path}: {type(exc).__name__} after {time.monotonic() - start:.1f} s")))
                return
            try:
                elapsed = time.monotonic() - start
                if elapsed > self.rest_timeout + self.grace:
                    raise Failure("deadline", f"REST {path} answered after {elapsed:.1f} s "
                                  f"(deadline {self.rest_timeout:.0f} s)")
                try:
                    doc = r.json()
                except ValueError:
                    raise Failure("bad-status", f"REST {path}: {r.status_code} with a body that is not "
                                  f"JSON: {r.text[:200]!r}") from None
                if r.status_code == 200:
                    self.judge("REST", target, before, "ok", version_of(doc["predictions"][0]), "")
                else:
                    code = {404: "not_found", 400: "invalid", 503: "unavailable", 504: "deadline"}.get(
                        r.status_code, f"http_{r.status_code}")
                    self.judge("REST", target, before, code, None, str(doc.get("error")))
            except Failure as failure:
                self.client_failures.append(failure)
                return
            except Exception as exc:  # noqa: BLE001 - any surprise is a failure to report
                self.client_failures.append(Failure("client", f"REST {path}: {exc!r}"))
                return
            self.stop_clients.wait(0.03)  # pacing: a steady trickle, not a flood

    def grpc_client(self) -> None:
        import grpc  # noqa: PLC0415
        from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415

        rng = random.Random(self.plan.seed * 31 + 2)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel())
        deadline = 10.0
        codes = {grpc.StatusCode.NOT_FOUND: "not_found", grpc.StatusCode.INVALID_ARGUMENT: "invalid",
                 grpc.StatusCode.UNAVAILABLE: "unavailable", grpc.StatusCode.DEADLINE_EXCEEDED: "deadline"}
        while not self.stop_clients.is_set():
            if self.hold(1):
                continue
            target = self.pick_target(rng)
            request = grpc_predict_request(2, version=target[1] if target[0] == "version" else None,
                                           label=target[1] if target[0] == "label" else None)
            before = self.window
            start = time.monotonic()
            try:
                try:
                    response = stub.Predict(request, timeout=deadline)
                except grpc.RpcError as err:
                    if self.stop_clients.is_set():
                        return
                    if time.monotonic() - start > deadline + self.grace:
                        raise Failure("deadline", f"gRPC Predict ended {time.monotonic() - start:.1f} s after "
                                      f"its start, deadline {deadline:.0f} s") from None
                    self.judge("gRPC", target, before, codes.get(err.code(), err.code().name),
                               None, err.details() or "")
                else:
                    y = response.outputs["y"].float_val[0]
                    v = version_of(y)
                    if v != response.model_spec.version.value:
                        raise Failure("wrong-answer", f"gRPC: model_spec says version "
                                      f"{response.model_spec.version.value}, the value {y} is version {v}'s")
                    self.judge("gRPC", target, before, "ok", v, "")
            except Failure as failure:
                self.client_failures.append(failure)
                return
            except Exception as exc:  # noqa: BLE001
                self.client_failures.append(Failure("client", f"gRPC: {exc!r}"))
                return
            self.stop_clients.wait(0.03)  # pacing

    # -- steps -------------------------------------------------------------------------------
    def run_step(self, step: Step) -> None:
        getattr(self, "step_" + step.kind)(step)

    def before_mutation(self) -> None:
        gap = self.last_mutation + MUTATION_GAP_SECONDS - time.monotonic()
        if gap > 0:
            time.sleep(gap)  # see MUTATION_GAP_SECONDS

    def widen(self, served: set[int]) -> None:
        self.window = self.window.union(window_of(served, self.config))

    def mutate(self, step: Step) -> None:
        """Apply one folder change; wait for the outcome the server shows, if it shows one."""
        v = step.get("v")
        self.before_mutation()
        mark = self.mark()
        prev = set(self.available)
        if step.kind == "remove":
            remove_version(self.base / str(v))
            del self.present[v]
            self.failed.discard(v)
        elif step.kind == "add":
            install_atomic(self.store.good(v), self.base / str(v))
            self.present[v] = "good"
        elif step.kind == "add_broken":
            install_atomic(self.store.broken, self.base / str(v))
            self.present[v] = "broken"
        elif step.kind == "add_slow":
            self.present[v] = "slow"
            self.widen(expected_available(self.present, self.failed, self.config.policy, prev))
            install_slowly(self.store.good(v), self.base / str(v), step.get("order"), step.get("pause_ms") / 1000)
        self.last_mutation = time.monotonic()
        self.available = expected_available(self.present, self.failed, self.config.policy, prev)
        self.widen(self.available)
        selected = self.config.policy.select(self.present)
        self.failed &= selected  # a version out of the policy is forgotten: next time it loads anew
        # A version still served (its folder had gone, the newer ones do not load) is
        # wanted again as it is: no new load, no new log line.
        if step.kind == "add_slow" and v in selected and v not in prev:
            # Half-written, the server may have failed to load it; then it stays failed
            # while aspired, and must not displace what is served.
            m = self.wait_log(rf"version: {v}\}} is (AVAILABLE|END with error)|Servable \{{name: {MODEL} "
                              rf"version: {v}\}} cannot be loaded", mark, 15 * self.slow,
                              f"an outcome for the slowly added version {v}")
            if m.group(1) != "AVAILABLE":
                self.failed.add(v)
                self.available = expected_available(self.present, self.failed, self.config.policy, prev)
                self.say(f"slowly added version {v} failed to load (half-written): {m.group(0)}")
        if step.kind == "add" and v in self.available and v not in prev:
            self.wait_log(rf"\{{name: {MODEL} version: {v}\}} is AVAILABLE", mark, 15 * self.slow,
                          f"version {v} AVAILABLE")

    step_add = step_add_slow = step_add_broken = step_remove = mutate

    def reload_outcome(self, new: Config) -> bool:
        """Will the server accept `new`? Labels must point at AVAILABLE versions, except
        that (with --allow_version_labels_for_unavailable_models) a new label, or one left
        unchanged, may point anywhere."""
        current = self.config.label_map()
        for label, v in new.labels:
            if v in self.available:
                continue
            if current.get(label, v) == v:
                continue
            return False
        return True

    def apply_config(self, new: Config) -> None:
        prev = set(self.available)
        self.config = new
        selected = new.policy.select(self.present)
        self.failed &= selected
        self.available = expected_available(self.present, self.failed, new.policy, prev)
        self.widen(self.available)

    def step_policy(self, step: Step) -> None:
        new = Config(step.get("policy"), step.get("labels"))
        accept = self.reload_outcome(new)
        if accept:
            after = expected_available(self.present, self.failed, new.policy, self.available)
            self.window = self.window.union(window_of(after, new))
        mark = self.mark()
        self.write_config(new)
        m = self.wait_log(r"(Model config reloaded)|(Model config file .* not applied: .*)", mark,
                          10 * self.slow, "the config file reload")
        if bool(m.group(1)) != accept:
            raise Failure("config", f"config {new} should be {'applied' if accept else 'refused'} "
                          f"(AVAILABLE {sorted(self.available)}, labels {self.config.label_map()}); "
                          f"the server: {m.group(0)}")
        if accept:
            self.apply_config(new)

    step_label = step_policy

    def step_grpc_reload(self, step: Step) -> None:
        import grpc  # noqa: PLC0415
        from google.protobuf import text_format  # noqa: PLC0415
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc  # noqa: PLC0415

        new = Config(step.get("policy"), step.get("labels"))
        accept = self.reload_outcome(new)
        if accept:
            after = expected_available(self.present, self.failed, new.policy, self.available)
            self.window = self.window.union(window_of(after, new))
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(new.text(self.base), request.config)
        stub = model_service_pb2_grpc.ModelServiceStub(self.channel())
        deadline = 10.0 * self.slow
        start = time.monotonic()
        try:
            stub.HandleReloadConfigRequest(request, timeout=deadline)
            outcome = "OK"
        except grpc.RpcError as err:
            outcome = f"{err.code().name}: {err.details()}"
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Failure("hang", f"HandleReloadConfig got no answer within {deadline:.0f} s") from None
        if (outcome == "OK") != accept:
            raise Failure("config", f"gRPC reload to {new} should be {'applied' if accept else 'refused'} "
                          f"(AVAILABLE {sorted(self.available)}, labels {self.config.label_map()}); "
                          f"the server: {outcome}")
        if not accept and not outcome.startswith("FAILED_PRECONDITION"):
            raise Failure("config", f"a refused reload should be FAILED_PRECONDITION, got {outcome}")
        self.say(f"gRPC reload: {outcome} in {time.monotonic() - start:.1f} s")
        if accept:
            self.apply_config(new)

    # big requests ---------------------------------------------------------------------
    def rest_in_thread(self, path: str, body: bytes, what: str) -> tuple[threading.Thread, dict[str, Any]]:
        """POST `body` on its own connection in a thread; the result dict gets `status`,
        `body`, `sent` (when the last byte left) and `end`, or `error`."""
        out: dict[str, Any] = {}
        tracked = Tracked(what, time.monotonic(), time.monotonic() + self.rest_timeout + 60)
        self.tracked.append(tracked)

        def run() -> None:
            assert self.server is not None
            conn = http.client.HTTPConnection("127.0.0.1", self.server.rest_port, timeout=self.rest_timeout + 3)
            out["conn"] = conn
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                out["sent"] = time.monotonic()
                tracked.deadline = out["sent"] + self.rest_timeout
                response = conn.getresponse()
                out["status"] = response.status
                out["body"] = response.read()
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                out["error"] = exc
            finally:
                out["end"] = tracked.end = time.monotonic()
                conn.close()

        t = threading.Thread(target=run, daemon=True, name=what)
        t.start()
        return t, out

    def finish_rest(self, t: threading.Thread, out: dict[str, Any], what: str, before: Window) -> None:
        """Wait (bounded) for a big REST request and check its answer and its timing."""
        # The server's deadline starts once it has the body: the client gives it 3 s more.
        self.wait_until(lambda: "sent" in out or "end" in out, 120 * self.slow, f"{what}: body sent")
        bound = out.get("sent", time.monotonic()) + self.rest_timeout + 3 - time.monotonic()
        try:
            self.wait_until(lambda: not t.is_alive(), max(0.0, bound), f"{what}: an answer", period=0.2)
        except Failure as failure:
            if failure.category != "timeout":
                raise
            raise Failure("deadline", f"{what}: no answer within the deadline ({self.rest_timeout:.0f} s) "
                          "+ 3 s of sending its body") from None
        if "error" in out:
            if isinstance(out["error"], socket.timeout):  # the connection's own timeout fired first
                raise Failure("deadline", f"{what}: no answer within the deadline ({self.rest_timeout:.0f} s) "
                              "+ 3 s of sending its body")
            raise Failure("connection", f"{what}: {out['error']!r} after "
                          f"{out['end'] - out.get('sent', out['end']):.1f} s")
        elapsed = out["end"] - out["sent"]
        status, body = out["status"], out["body"]
        self.say(f"{what}: {status} after {elapsed:.1f} s")
        w = before.union(self.window)
        if status == 200:
            m = FIRST_PREDICTION.search(body[:200])
            v = version_of(float(m.group(1))) if m else None
            if v is None or v not in w.served:
                raise Failure("wrong-answer", f"{what}: answered by version {v}, outside {sorted(w.served)}: "
                              f"{body[:100]!r}")
        else:
            try:
                error = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                raise Failure("bad-status", f"{what}: {status} without a JSON error: {body[:200]!r}") from None
            if status == 404 and not w.may_be_empty:
                raise Failure("wrong-answer", f"{what}: 404 while {sorted(w.served)} should stay served: {error}")
            if status not in (404, 503, 504):
                raise Failure("bad-status", f"{what}: {status}: {error[:300]}")
        if elapsed > self.rest_timeout + self.grace:
            raise Failure("deadline", f"{what}: answered {status} {elapsed:.1f} s after its body was sent; "
                          f"the deadline (--rest_api_timeout_in_ms) is {self.rest_timeout:.0f} s")

    def step_slow_request(self, step: Step) -> None:
        api, floats = step.get("api"), step.get("floats") or step.get("examples")
        before = self.window
        what = {"rest": f"slow REST predict of {floats:,} floats",
                "grpc_predict": f"slow gRPC predict of {floats:,} floats",
                "grpc_regress": f"slow gRPC regress of {floats:,} examples"}[api]
        if api == "rest":
            t, out = self.rest_in_thread(f"/v1/models/{MODEL}:predict", rest_body(floats), what)
            self.wait_until(lambda: "sent" in out or "end" in out, 60 * self.slow, f"{what}: body sent",
                            period=0.05)
            ended: Callable[[], bool] = lambda: "end" in out  # noqa: E731
        else:
            future, tracked, deadline = self.grpc_future(floats, 60.0 * self.slow, what, regress=api == "grpc_regress")
            ended = future.done
        self.wait_holding(ended, floats, what)
        for sub in step.get("during"):
            self.say(f"  during: {sub}" + ("  (the slow request has ended already)" if ended() else ""))
            self.mutate(sub)
        if api == "rest":
            self.finish_rest(t, out, what, before)
        else:
            self.finish_grpc(future, tracked, deadline, what, before, allow_cancel=False)

    def handles_held(self) -> float | None:
        """Sum of `pyserving_servable_handles_in_use`, None if the server does not export it."""
        values = [v for name, _, v in self.metrics() if name == "pyserving_servable_handles_in_use"]
        return sum(values) if values else None

    def wait_holding(self, ended: Callable[[], bool], floats: int, what: str) -> None:
        """Wait until the slow request holds its version (or has ended): what it holds is what
        the lifecycle steps done meanwhile must wait for. The background clients pause so
        that the handle counted is ours."""
        self.pause_clients()
        try:
            if self.handles_held() is None:
                time.sleep(parse_allowance(floats, self.slow))  # see parse_allowance
                return
            self.wait_until(lambda: ended() or (self.handles_held() or 0) >= 1, 60 * self.slow,
                            f"{what} holding its version", period=0.05)
        finally:
            self.resume_clients()

    def grpc_future(self, size: int, deadline: float, what: str, regress: bool = False) -> tuple[Any, Tracked, float]:
        from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415

        stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel())
        if regress:
            future = stub.Regress.future(grpc_regress_request(size), timeout=deadline)
        else:
            future = stub.Predict.future(grpc_predict_request(size), timeout=deadline)
        # Timed from here: creating the future serializes the request in this thread first.
        tracked = Tracked(what, time.monotonic(), time.monotonic() + deadline)
        self.tracked.append(tracked)
        future.add_done_callback(lambda _f: setattr(tracked, "end", time.monotonic()))
        return future, tracked, deadline

    def finish_grpc(self, future: Any, tracked: Tracked, deadline: float, what: str, before: Window,
                    allow_cancel: bool) -> None:
        import grpc  # noqa: PLC0415

        self.wait_until(future.done, deadline + 3, f"{what}: an answer", period=0.1)
        elapsed = (tracked.end or time.monotonic()) - tracked.start
        if elapsed > deadline + self.grace:
            raise Failure("deadline", f"{what} ended after {elapsed:.1f} s, deadline {deadline:.2f} s")
        if future.cancelled():
            if not allow_cancel:
                raise Failure("bad-status", f"{what}: cancelled")
            self.say(f"{what}: cancelled after {elapsed:.2f} s")
            return
        try:
            response = future.result(timeout=0)
        except grpc.RpcError as err:
            self.say(f"{what}: {err.code().name} after {elapsed:.2f} s")
            allowed = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
            if allow_cancel:
                allowed.add(grpc.StatusCode.CANCELLED)
            w = before.union(self.window)
            if err.code() == grpc.StatusCode.NOT_FOUND and w.may_be_empty:
                return
            if err.code() not in allowed:
                raise Failure("bad-status", f"{what}: {err.code().name}: {err.details()}") from None
            return
        v = response.model_spec.version.value
        self.say(f"{what}: OK from version {v} after {elapsed:.2f} s")
        w = before.union(self.window)
        if hasattr(response, "outputs"):
            first = response.outputs["y"].float_val[0] if response.outputs["y"].float_val else None
        else:
            first = response.result.regressions[0].value
        if v not in w.served or (first is not None and version_of(first) != v):
            raise Failure("wrong-answer", f"{what}: answered by version {v} (first value {first}), "
                          f"outside {sorted(w.served)}")

    def step_grpc_cancel(self, step: Step) -> None:
        floats = step.get("floats")
        what = f"gRPC predict of {floats:,} floats cancelled after {step.get('after_ms')} ms"
        future, tracked, deadline = self.grpc_future(floats, 60.0 * self.slow, what)
        time.sleep(step.get("after_ms") / 1000)  # the moment of the cancel is the step's parameter
        future.cancel()
        self.finish_grpc(future, tracked, deadline, what, self.window, allow_cancel=True)

    def step_grpc_deadline(self, step: Step) -> None:
        floats = step.get("floats")
        deadline = step.get("deadline_ms") / 1000
        what = f"gRPC predict of {floats:,} floats with a {step.get('deadline_ms')} ms deadline"
        future, tracked, _ = self.grpc_future(floats, deadline, what)
        self.finish_grpc(future, tracked, deadline, what, self.window, allow_cancel=False)

    def step_disconnect(self, step: Step) -> None:
        """Headers and none, part or all of a big body, then the client goes away."""
        assert self.server is not None
        body = rest_body(step.get("floats"))
        sent = {"headers": 0, "part": len(body) // 3, "all": len(body)}[step.get("sent")]
        head = (f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.server.rest_port), timeout=10) as s:
            s.sendall(head)
            s.sendall(memoryview(body)[:sent])
        # With the whole body, the server runs the request for a client that is gone.
        self.tracked.append(Tracked(f"disconnected client ({step.get('sent')})", start,
                                    time.monotonic() + self.rest_timeout))

    def step_malformed(self, step: Step) -> None:
        body = MALFORMED_BODIES[step.get("body")]
        start = time.monotonic()
        r = requests.post(f"{self.url}/v1/models/{MODEL}:predict", data=body, timeout=(2, self.rest_timeout + 3))
        elapsed = time.monotonic() - start
        try:
            error = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise Failure("bad-status", f"malformed body {body!r}: {r.status_code} without a JSON error: "
                          f"{r.text[:200]!r}") from None
        if r.status_code != 400:
            raise Failure("bad-status", f"malformed body {body!r}: {r.status_code} (want 400): {error}")
        if elapsed > 1.0 + self.grace:
            raise Failure("deadline", f"malformed body {body!r}: answered after {elapsed:.1f} s")

    def step_too_big(self, step: Step) -> None:
        assert self.server is not None
        how = step.get("how")
        chunk = b"1.0," * (1 << 18)  # 1 MiB
        with socket.create_connection(("127.0.0.1", self.server.rest_port), timeout=10) as s:
            if how == "declared":
                s.sendall((f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n").encode() + chunk)
            else:
                s.sendall((f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n").encode())
                frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
                try:
                    for _ in range(MAX_BODY_BYTES // len(chunk) + 16):  # past the limit
                        s.sendall(frame)
                except OSError:
                    pass  # the server answered and closed: read what it said
            s.settimeout(5 * self.slow)
            data = b""
            try:
                while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _content_length(data):
                    more = s.recv(65536)
                    if not more:
                        break
                    data += more
            except socket.timeout:
                raise Failure("hang", f"body over the limit ({how}): no answer within {5 * self.slow:.0f} s "
                              f"(got {data[:100]!r})") from None
            except ConnectionResetError:
                pass
        if not data.startswith(b"HTTP/1.1 413"):
            raise Failure("bad-status", f"body over the limit ({how}): want 413, got {data[:200]!r}")
        body = data.split(b"\r\n\r\n", 1)[1]
        if b'"error"' not in body:
            raise Failure("bad-status", f"body over the limit ({how}): 413 without a JSON error: {body[:200]!r}")

    # -- after each step and at the end --------------------------------------------------------
    def after_step(self, step: Step) -> None:
        if step.kind in ("disconnect", "grpc_cancel", "grpc_deadline"):
            self.quiesce()
        self.converge()
        self.scan_log()
        self.check_clients()
        if self.probe(strict=True) is None:
            raise Failure("unresponsive", "no status answer")
        self.window = window_of(self.available, self.config)
        now = time.monotonic()
        self.tracked = [r for r in self.tracked if r.end is None and r.deadline > now - 60]

    def idle_checks(self, notes: list[str]) -> None:
        self.stop_clients.set()
        for t in self.client_threads:
            t.join(self.rest_timeout + 5)
            if t.is_alive():
                raise Failure("hang", f"the background {t.name} did not end")
        self.check_clients()

        handles = self.handles_held
        if handles() is None:
            notes.append("note: the server exports no pyserving_servable_handles_in_use; not checked")
        else:
            # A request whose client went away may still run on the server: wait for it.
            self.wait_until(lambda: handles() == 0, self.rest_timeout + 5,
                            "pyserving_servable_handles_in_use summing to 0 when idle", period=0.25)
        samples = self.metrics()
        ages = [v for name, _, v in samples if name == "pyserving_oldest_request_age_seconds"]
        if ages and max(ages) > 0:
            raise Failure("idle", f"pyserving_oldest_request_age_seconds is {max(ages)} with nothing in flight")
        buckets = {float(labels.get("le", "nan")): v for name, labels, v in samples
                   if name == "pyserving_event_loop_lag_seconds_bucket"}
        count = sum(v for name, _, v in samples if name == "pyserving_event_loop_lag_seconds_count")
        over = [le for le in buckets if le >= 1.0]
        if over:  # cumulative buckets: the first at or above 1 s counts the lags up to it
            lag_le = min(over)
            if count - buckets[lag_le] > 0:
                notes.append(f"note: pyserving_event_loop_lag_seconds saw {count - buckets[lag_le]:.0f} "
                             f"lag(s) over {lag_le} s")
        assert self.server is not None and self.server.proc is not None
        pid = self.server.proc.pid
        before = cpu_seconds(pid)
        start = time.monotonic()
        time.sleep(2.0)  # the measurement window itself
        used = (cpu_seconds(pid) - before) / (time.monotonic() - start)
        if used > 0.10:
            raise Failure("idle-cpu", f"idle, the server used {used:.0%} of a core over 2 s")
        self.probe(strict=True)


def _content_length(data: bytes) -> int:
    m = re.search(rb"(?i)content-length:\s*(\d+)", data)
    return int(m.group(1)) if m else 0


def run_seed(p: Plan, store: Store, workdir: Path, server_src: str | None = None,
             verbose: bool = False) -> SeedResult:
    """Run one plan against a fresh server; never raises for what the server does."""
    runner = Runner(p, store, workdir, server_src, verbose)
    result = SeedResult(p, 0, 0.0, server_src=server_src or os.environ.get("PYSERVING_SERVER_SRC"))
    start = time.monotonic()
    index: int | None = None
    try:
        runner.start()
        for index, step in enumerate(p.steps):
            t0 = time.monotonic()
            runner.say(f"step {index}: {step}")
            runner.step_index = index
            runner.run_step(step)
            runner.after_step(step)
            result.steps_run = index + 1
            runner.say(f"step {index} done in {time.monotonic() - t0:.1f} s; AVAILABLE {sorted(runner.available)}")
        index = len(p.steps)
        runner.idle_checks(result.notes)
    except Failure as failure:
        result.failure, result.failed_step = failure, index
        if failure.category in ("unresponsive", "hang", "deadline", "idle-cpu"):
            runner.diagnose(result.notes)
    except Exception as exc:  # noqa: BLE001 - a bug of the driver, reported like a failure
        result.failure = Failure("driver", f"{exc!r}\n{traceback.format_exc()}")
        result.failed_step = index
    finally:
        result.log_tail = runner.log_tail()
        try:
            runner.close()
        except Exception as exc:  # noqa: BLE001
            result.notes.append(f"note: cleanup: {exc!r}")
        result.seconds = time.monotonic() - start
        result.stalls = sorted(runner.stalls, reverse=True)
        for seconds, step_index, busy in result.stalls[:3]:
            if seconds > 1.0:
                result.notes.append(f"note: the server did not answer its status for {seconds:.1f} s "
                                    f"during step {step_index} (requests of ours in flight: {busy})")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(runner.client_counts.items()))
        result.notes.append(f"background answers: {counts or 'none'}")
    return result


# ---------------------------------------------------------------------------- command line


def _seed_list(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-9", help="seeds to run: 0-199 or 1,5,7")
    ap.add_argument("--seed", type=int, help="one seed (replay)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="long")
    ap.add_argument("--budget", type=float, default=0, help="start no new seed after this many seconds")
    ap.add_argument("--server-src", help="run the server from this source tree (its src/ directory)")
    ap.add_argument("--store", help="model store directory to reuse (built if missing)")
    ap.add_argument("--print-plan", action="store_true", help="print the plans and exit")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else _seed_list(args.seeds)
    if args.print_plan:
        for seed in seeds:
            print(plan(seed, args.steps, args.profile).describe())
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="lifecycle-fuzz-"))
    started = time.monotonic()
    results: list[SeedResult] = []
    try:
        store = build_store(Path(args.store) if args.store else tmp / "store")
        for seed in seeds:
            if args.budget and time.monotonic() - started > args.budget:
                break
            p = plan(seed, args.steps, args.profile)
            workdir = tmp / f"seed-{seed}"
            workdir.mkdir()
            result = run_seed(p, store, workdir, args.server_src, args.verbose)
            results.append(result)
            print(result.report() if not result.ok else
                  f"seed {seed}: ok ({result.steps_run} steps, {result.seconds:.0f} s, "
                  f"burner {'on' if p.burner else 'off'})", flush=True)
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failures = [r for r in results if not r.ok]
    steps = sum(r.steps_run for r in results)
    print(f"\nsummary: {len(results)} seed(s), {steps} step(s) passed, {len(failures)} failure(s) "
          f"in {time.monotonic() - started:.0f} s")
    by_category: dict[str, list[int]] = {}
    for r in failures:
        assert r.failure is not None
        by_category.setdefault(r.failure.category, []).append(r.plan.seed)
    for category, failed_seeds in sorted(by_category.items()):
        print(f"  {category}: seeds {failed_seeds}")
    stalled = [(r.stalls[0][0], r.plan.seed, r.stalls[0][1]) for r in results if r.stalls and r.stalls[0][0] > 1.0]
    if stalled:
        print(f"  the status endpoint stalled over 1 s (a big request in flight) in {len(stalled)} seed(s); "
              "longest: " + ", ".join(f"{sec:.1f} s (seed {seed} step {step})"
                                      for sec, seed, step in sorted(stalled, reverse=True)[:5]))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
