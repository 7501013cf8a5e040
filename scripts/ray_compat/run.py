"""Runs Ray's own test files, unchanged, against fleet, and prints a pass table.

    python scripts/ray_compat/run.py RAY_TESTS_DIR [test_file.py ...] [--timeout S] [--json OUT]

The test files are copied into a scratch folder beside a conftest that pulls in
Ray's fixtures (``shim/ray_fixtures.py``); ``shim/`` goes first on PYTHONPATH,
so ``import ray`` gives fleet. Each file runs in its own pytest process with a
per-test timeout; a test that hangs is recorded as ``hang`` and the file is
resumed after it, so one hang costs one test, not the file.

A test that fails before its own ``ray.shutdown()`` is cleaned up after (so
it does not fail the tests after it). A failing test counts as *internal*
when it failed by using one of Ray's internals that fleet does not provide
(the shim's placeholder says so: ``MissingInRayShim: [internal]
ray._private...``), or asked for a Ray-only
fixture; the table reports the pass rate over the other tests, which is the
figure for "tests that use only the public API". Public API that fleet lacks
counts as a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM = os.path.join(HERE, "shim")

_HOOKS = '''
import json, os
from ray_fixtures import *  # noqa: F401,F403

_LOG = os.environ["RAY_COMPAT_LOG"]


def _write(rec):
    with open(_LOG, "a") as f:
        f.write(json.dumps(rec) + "\\n")


import pytest as _pytest

_SHARED = {"ray_start_regular_shared", "ray_start_regular_shared_2_cpus"}


@_pytest.fixture(autouse=True)
def _no_cascade(request):
    # A test that fails before its own ray.shutdown() must not fail the
    # tests after it with "init twice": shut down what it left (unless the
    # cluster is a module's shared one).
    yield
    import ray
    if not (_SHARED & set(request.fixturenames)) and ray.is_initialized():
        ray.shutdown()


def pytest_collection_finish(session):
    import ray  # noqa: F401 (installs the shim)
    import ray_shim
    ray_shim.set_lenient(False)


def pytest_runtest_logstart(nodeid, location):
    _write({"nodeid": nodeid, "event": "start"})


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed" or report.when == "teardown":
        text = "" if report.passed else str(report.longrepr)[-6000:]
        _write({"nodeid": report.nodeid, "event": report.when, "outcome": report.outcome,
                "text": text})


def pytest_collectreport(report):
    if report.failed:
        _write({"nodeid": report.nodeid, "event": "collect", "outcome": "failed",
                "text": str(report.longrepr)[-6000:]})
'''

INTERNAL_MARKERS = (
    "MissingInRayShim: [internal]",  # the shim's placeholder for a Ray internal
    "MissingInRayShim('[internal]",  # (the same, caught and reported by a helper)
)


def _outcomes(log_path):
    started, result, texts = [], {}, {}
    if not os.path.exists(log_path):
        return started, result, texts
    for line in open(log_path):
        rec = json.loads(line)
        nid = rec["nodeid"]
        if rec["event"] == "start":
            started.append(nid)
            continue
        if rec["event"] == "collect":
            result[nid] = "collect-error"
            texts[nid] = rec["text"]
            continue
        prev = result.get(nid)
        out = rec["outcome"]
        if out == "failed" and rec["event"] == "teardown" and prev == "passed":
            out = "teardown-error"
        elif rec["event"] == "setup" and out == "failed":
            out = "setup-error"
        if prev in (None, "passed") or out == "failed":
            result[nid] = out
        if rec.get("text"):
            texts[nid] = rec["text"]
    return started, result, texts


def _cleanup(env):
    subprocess.run([sys.executable, "-m", "fleet.scripts", "stop"],
                   capture_output=True, timeout=60, env=env)


def run_file(src, path, timeout, verbose):
    work = tempfile.mkdtemp(prefix="raycompat-")
    shutil.copy(path, work)
    for extra in os.listdir(src):
        if extra.endswith(".py") and not extra.startswith("test_") and extra != "conftest.py":
            shutil.copy(os.path.join(src, extra), work)
    with open(os.path.join(work, "conftest.py"), "w") as f:
        f.write(_HOOKS)
    log = os.path.join(work, "results.jsonl")
    env = dict(os.environ, PYTHONPATH=SHIM + os.pathsep + os.environ.get("PYTHONPATH", ""),
               RAY_COMPAT_LOG=log)
    env.setdefault("FLEET_TMPDIR", "/tmp/fleet-raycompat")
    # `ray start`, `ray stop`, ... as Ray's tests run them: fleet's CLI.
    bin_dir = os.path.join(work, "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "ray"), "w") as f:
        f.write(f"#!/bin/sh\nexec {sys.executable} -m fleet.scripts \"$@\"\n")
    os.chmod(os.path.join(bin_dir, "ray"), 0o755)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    name = os.path.basename(path)
    deselect, hangs = [], []
    for _attempt in range(50):
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name,
               f"--timeout={timeout}", "--timeout-method=thread", "-o", "timeout_func_only=false"]
        for d in deselect:
            cmd += ["--deselect", d]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout * 200 + 600)
        started, result, _ = _outcomes(log)
        if verbose:
            print(f"  [{name}] rc={proc.returncode} {time.time() - t0:.0f}s", file=sys.stderr)
        unfinished = [n for n in started if n not in result and n not in hangs]
        if "Timeout" in proc.stdout + proc.stderr and unfinished:
            hangs.append(unfinished[-1])
            deselect = list(dict.fromkeys(list(result) + hangs))
            _cleanup(env)
            continue
        if proc.returncode not in (0, 1) and unfinished:
            # Crashed pytest (e.g. a segfault): record and go on past it.
            hangs.append(unfinished[-1])
            deselect = list(dict.fromkeys(list(result) + hangs))
            _cleanup(env)
            continue
        break
    _cleanup(env)
    started, result, texts = _outcomes(log)
    for h in hangs:
        result[h] = "hang"
    shutil.rmtree(work, ignore_errors=True)
    return result, texts


def classify(outcome, text):
    if outcome == "passed" or outcome == "skipped":
        return outcome
    if any(m in text for m in INTERNAL_MARKERS) or "fixture '" in text and "not found" in text:
        return "internal"
    return outcome


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("files", nargs="*")
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--json")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    files = args.files or sorted(f for f in os.listdir(args.src) if f.startswith("test_"))
    report = {}
    tot = {"passed": 0, "failed": 0, "hang": 0, "internal": 0, "skipped": 0}
    print(f"{'file':34} {'pass':>5} {'fail':>5} {'hang':>5} {'intern':>6} {'skip':>5} {'rate':>6}")
    for f in files:
        result, texts = run_file(args.src, os.path.join(args.src, f), args.timeout, args.v)
        rows = {}
        c = {"passed": 0, "failed": 0, "hang": 0, "internal": 0, "skipped": 0}
        for nid, out in result.items():
            k = classify(out, texts.get(nid, ""))
            k = k if k in c else "failed"
            c[k] += 1
            rows[nid] = {"outcome": out, "class": k, "text": texts.get(nid, "")}
        for k in tot:
            tot[k] += c[k]
        denom = c["passed"] + c["failed"] + c["hang"]
        rate = f"{100 * c['passed'] / denom:.0f}%" if denom else "-"
        print(f"{f:34} {c['passed']:5} {c['failed']:5} {c['hang']:5} {c['internal']:6} "
              f"{c['skipped']:5} {rate:>6}", flush=True)
        report[f] = rows
        if args.json:
            with open(args.json, "w") as out:
                json.dump(report, out, indent=1)
    denom = tot["passed"] + tot["failed"] + tot["hang"]
    print(f"{'TOTAL':34} {tot['passed']:5} {tot['failed']:5} {tot['hang']:5} {tot['internal']:6} "
          f"{tot['skipped']:5} {100 * tot['passed'] / max(denom, 1):5.0f}%")


if __name__ == "__main__":
    main()
