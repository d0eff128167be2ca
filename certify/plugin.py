"""The pytest plugin: claim markers, backend options, evidence recording, the report.

Certificates attach to a claim with ``@pytest.mark.claim("richardson.identity")``
and record evidence through the ``record`` fixture.  Evidence travels inside
``user_properties`` so that it survives pytest-xdist; the controlling process
folds it into one result per claim and, with --certify-report DIR, writes the
report when the session ends.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from certify import backend as backend_mod
from certify import profiles, registry
from certify.golden import GOLDEN_DIR, GoldenStore, GoldenUnpinned, update_refusal
from certify.results import ClaimResult, fold_ops

# Registered on import: hypothesis' own plugin loads --hypothesis-profile before our configure.
profiles.register()

PROPERTY_KEY = "certify"
CERTIFY_DIR = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("certify", "claim certification")
    g.addoption("--device", default=None, help="cpu|cuda (env CERTIFY_DEVICE; default cpu)")
    g.addoption("--dtype", default=None, help="float64|float32 (env CERTIFY_DTYPE; default float64)")
    g.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="re-pin golden metrics from this run (refused in CI and under -n > 1)",
    )
    g.addoption("--golden-dir", default=str(GOLDEN_DIR), help="folder of golden/<family>.json")
    g.addoption("--certify-only", action="append", default=[], help="claim id or prefix to run")
    g.addoption("--slow", action="store_true", default=False,
                help="also run the slow tier (tests marked slow; env CERTIFY_SLOW=1)")
    g.addoption("--certify-report", default=None, help="write report/ (claims.json, ...) here")
    g.addoption(
        "--certify-claim-map",
        default=None,
        help="(internal) JSON file nodeid -> claim, for progress lines under xdist",
    )
    g.addoption(
        "--certify-write-claim-map",
        default=None,
        help="(internal) with --collect-only: write nodeid -> claim to this JSON file",
    )


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _worker_count(config: pytest.Config) -> int:
    n = getattr(config.option, "numprocesses", None)
    if n in (None, 0):
        return 1
    if n == "auto" or n == "logical":
        return os.cpu_count() or 1
    return int(n)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "claim(id): the registered claim a certificate checks")
    config.addinivalue_line("markers", "slow: a tier too slow for the default run")
    try:
        be = backend_mod.resolve(config.getoption("--device"), config.getoption("--dtype"))
        profile = profiles.load(config.getoption("hypothesis_profile", None))
        registry.select(config.getoption("--certify-only") or None)
    except (backend_mod.BackendError, ValueError, registry.UnknownClaimError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("--update-golden"):
        why = update_refusal(2 if _is_worker(config) else _worker_count(config))
        if why:
            raise pytest.UsageError(why)
    # One BLAS/torch thread per process: xdist supplies the parallelism, and two
    # threads on a loaded 2-core machine slow a 64x64 SVD ~100-fold.
    torch.set_num_threads(1)
    config.stash[STATE] = SessionState(config, be, profile)
    config.pluginmanager.register(config.stash[STATE], "certify-session")


STATE = pytest.StashKey["SessionState"]()


def claim_of(item: pytest.Item) -> str | None:
    marks = list(item.iter_markers("claim"))
    if not marks:
        return None
    if len(marks) > 1 or len(marks[0].args) != 1:
        raise pytest.UsageError(f"{item.nodeid}: a certificate carries exactly one claim id")
    return marks[0].args[0]


def _in_certify_package(item: pytest.Item) -> bool:
    return CERTIFY_DIR in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate claim ids (an unknown id is a collection error) and apply --certify-only."""
    problems = []
    for item in items:
        cid = claim_of(item)
        if cid is None:
            if _in_certify_package(item):
                problems.append(f"{item.nodeid}: a certificate without @pytest.mark.claim(...)")
            continue
        if cid not in registry.CLAIMS:
            problems.append(f"{item.nodeid}: unknown claim id {cid!r} (see certify/registry.py)")
            continue
        item.user_properties.append((PROPERTY_KEY, {"claim": cid, "kind": "claim"}))
    if problems:
        raise pytest.UsageError("claim marker errors:\n  " + "\n  ".join(problems))
    if not slow_tier(config):
        skip = pytest.mark.skip(reason=SLOW_SKIP)
        for item in items:
            if item.get_closest_marker("slow") is not None:
                item.add_marker(skip)
    only = config.getoption("--certify-only")
    if only:
        keep, drop = [], []
        for item in items:
            cid = claim_of(item)
            (keep if cid and any(registry.matches(cid, p) for p in only) else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    if config.getoption("--certify-report"):  # the report's runs: longest scopes first (xdist balance)
        from certify import durations

        items[:] = durations.longest_first(items, durations.load(config.stash[STATE].backend.name))
    path = config.getoption("--certify-write-claim-map")
    if path:
        Path(path).write_text(json.dumps({i.nodeid: claim_of(i) for i in items if claim_of(i)}))


SLOW_SKIP = "slow tier: run with python -m certify --slow (or pytest --slow, env CERTIFY_SLOW=1)"


def slow_tier(config: pytest.Config) -> bool:
    """Whether tests marked `slow` run: --slow, or CERTIFY_SLOW set to a true value."""
    env = os.environ.get("CERTIFY_SLOW", "").strip().lower() not in ("", "0", "false", "no")
    return bool(config.getoption("--slow")) or env


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember which tests each claim has (after -k/--certify-only deselection)."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    for item in session.items:
        cid = claim_of(item)
        if cid:
            state.expected.setdefault(cid, set()).add(item.nodeid)


class Recorder:
    """What one certificate says about its claim; flushed into user_properties."""

    def __init__(self, claim_id: str):
        self.claim = claim_id
        self.ops: dict[str, tuple[str, Any]] = {}
        self.examples = 0
        self.verdicts: list[dict[str, Any]] = []
        self.figures: list[dict[str, Any]] = []

    def _op(self, op: str, name: str, value: Any) -> None:
        if isinstance(value, bool):
            value = int(value)
        if type(value) not in (int, float, str):
            value = str(value) if isinstance(value, str) else float(value)  # numpy / torch scalars
        if name in self.ops:
            self.ops[name] = fold_ops(self.ops[name], (op, value))
        else:
            self.ops[name] = (op, value)

    def set(self, name: str, value: Any) -> None:
        """Evidence whose last value wins (a pinned metric, a configuration)."""
        self._op("set", name, value)

    def max(self, name: str, value: Any) -> None:
        self._op("max", name, value)

    def min(self, name: str, value: Any) -> None:
        self._op("min", name, value)

    def sum(self, name: str, value: Any) -> None:
        self._op("sum", name, value)

    def example(self, n: int = 1) -> None:
        self.examples += n

    def verdict(self, status: str, reason: str = "", counterexample: Any = None) -> None:
        """Say the claim is disproved / conditional / open (a passing check is `verified`)."""
        if status not in ("disproved", "conditional", "open"):
            raise ValueError(f"a certificate may only report disproved/conditional/open, not {status!r}")
        self.verdicts.append({"status": status, "reason": reason, "counterexample": counterexample})

    def figure(self, name: str, data: dict[str, Any]) -> None:
        """Data for the figure `name` of certify/figures.py (JSON-able)."""
        self.figures.append({"name": name, "data": data})

    def payload(self) -> dict[str, Any]:
        """Plain Python values only: xdist (execnet) serializes no numpy or torch objects."""
        return _plain({
            "claim": self.claim,
            "kind": "evidence",
            "ops": {k: list(v) for k, v in self.ops.items()},
            "examples": self.examples,
            "verdicts": self.verdicts,
            "figures": self.figures,
        })


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or type(x) in (bool, int, float, str):  # not isinstance: np.float64 is a float
        return x
    if isinstance(x, str):
        return str(x)
    if hasattr(x, "tolist"):  # numpy / torch arrays and scalars
        return _plain(x.tolist())
    if isinstance(x, (complex,)):
        return repr(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


@pytest.fixture
def record(request: pytest.FixtureRequest):
    """The evidence recorder of the certificate's claim."""
    cid = claim_of(request.node)
    if cid is None:
        raise pytest.UsageError(f"{request.node.nodeid}: `record` needs @pytest.mark.claim(...)")
    rec = Recorder(cid)
    yield rec
    request.node.user_properties.append((PROPERTY_KEY, rec.payload()))


@pytest.fixture(scope="session")
def backend(pytestconfig: pytest.Config) -> backend_mod.Backend:
    return pytestconfig.stash[STATE].backend


@pytest.fixture(scope="session")
def golden_store(pytestconfig: pytest.Config) -> GoldenStore:
    return pytestconfig.stash[STATE].golden


@pytest.fixture
def golden(golden_store: GoldenStore, request: pytest.FixtureRequest):
    """``golden(family, metrics, rtol, atol, seeds, seed, setup)``: compare with golden/<family>.json.

    A backend with no pinned values cannot be compared: the certificate's other checks
    still count, and the claim's evidence says `golden: not pinned for <backend>`.
    """
    state: SessionState = request.config.stash[STATE]
    rec: Recorder = request.getfixturevalue("record")

    def check(family: str, metrics: dict[str, float], rtol: float, atol: float = 0.0,
              seeds: dict[str, float] | None = None, seed: int | None = None,
              setup: dict[str, str | float] | None = None) -> None:
        prov = state.provenance(request.node.nodeid, seed)
        try:
            golden_store.check(family, metrics, rtol, atol, seeds, prov, setup)
        except GoldenUnpinned as exc:
            rec.set("golden", f"not compared: {exc}")
        else:
            rec.set("golden", "updated" if golden_store.update else f"matches golden/{family}.json")

    return check


class SessionState:
    """Controller-side fold of all reports into per-claim results."""

    def __init__(self, config: pytest.Config, be: backend_mod.Backend, profile: str):
        self.config = config
        self.backend = be
        self.profile = profile
        self.started = time.time()
        self.golden = GoldenStore(
            Path(config.getoption("--golden-dir")), be.name, bool(config.getoption("--update-golden"))
        )
        self.results: dict[str, ClaimResult] = {}
        self.expected: dict[str, set[str]] = {}
        self.done: dict[str, set[str]] = {}
        self.announced: set[str] = set()
        self.seconds: dict[str, float] = {}  # per test, all phases (certify.durations)
        mp = config.getoption("--certify-claim-map")
        if mp:
            for nodeid, cid in json.loads(Path(mp).read_text()).items():
                self.expected.setdefault(cid, set()).add(nodeid)

    def provenance(self, nodeid: str, seed: int | None) -> dict[str, Any]:
        from certify.report import suite_versions, git_commit

        return {
            "commit": git_commit(),
            "versions": suite_versions(),
            "device": self.backend.device,
            "dtype": self.backend.dtype,
            "seed": seed,
            "command": f"python -m certify --device {self.backend.device} --dtype {self.backend.dtype}",
            "test": nodeid,
            "profile": self.profile,
        }

    def result(self, cid: str) -> ClaimResult:
        if cid not in self.results:
            self.results[cid] = ClaimResult(cid)
        return self.results[cid]

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if _is_worker(self.config):
            return
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration
        props = [v for k, v in report.user_properties if k == PROPERTY_KEY]
        cid = next((p["claim"] for p in props), None)
        if cid is None:
            return
        res = self.result(cid)
        res.seconds += report.duration
        if report.when == "teardown":
            for p in props:
                if p.get("kind") == "evidence":
                    res.absorb(p)
        if report.failed:
            res.fail(report.nodeid, report.when, _failure_text(report))
        elif report.skipped:
            res.skip(report.nodeid, _skip_reason(report))
        elif report.when == "call":
            res.passed.add(report.nodeid)
        if report.when == "teardown":
            self.done.setdefault(cid, set()).add(report.nodeid)
            self._maybe_announce(cid)

    def _maybe_announce(self, cid: str) -> None:
        want = self.expected.get(cid)
        if not want or cid in self.announced or not want <= self.done.get(cid, set()):
            return
        self.announced.add(cid)
        res = self.results[cid]
        claim = registry.CLAIMS[cid]
        status, _ = res.status()
        mark = "ok" if status == claim.expected else "MISS"
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        line = (
            f"[certify {len(self.announced):>2}/{len(self.expected)}] {cid:<36} {status:<11} "
            f"(expected {claim.expected}; {res.checks} checks, {res.examples} examples, "
            f"{res.seconds:.1f} s) {mark}"
        )
        if tr is not None:
            tr.write_line(line)
        else:
            print(line, flush=True)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if _is_worker(self.config):
            return
        if self.golden.update and self.golden.pending:
            for p in self.golden.write_pending():
                print(f"\n[certify] golden values written: {p}", flush=True)
        out = self.config.getoption("--certify-report")
        if out:
            from certify import durations
            from certify.report import write_report

            durations.save(self.backend.name, self.seconds)

            only = self.config.getoption("--certify-only") or None
            write_report(
                Path(out),
                results=self.results,
                selected=[c.id for c in registry.select(only)],
                backend=self.backend,
                profile=self.profile,
                started=self.started,
                seconds=time.time() - self.started,
                collection_ok=exitstatus in (0, 1),
            )


def _failure_text(report: pytest.TestReport) -> str:
    text = str(report.longreprtext or "")
    return text[-6000:]


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2]).removeprefix("Skipped: ")
    return str(lr)

