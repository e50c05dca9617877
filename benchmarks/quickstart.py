"""The quickstart as a new user meets it (issue 16), timed side by side in one run.

- start-up: `edgekit --help`, a typo'd command, and a missing file, each a whole process (median of 5);
- `edgekit demo`: three runs, the second beside a CPU hog (`stress-ng --cpu N`, N = the cores) when
  stress-ng is installed; each run's wall time, exit code and verdict (every row's pass/FAIL/skipped),
  and whether the three verdicts are the same;
- with --install: a fresh venv, `pip install ".[demo]"` timed, and the venv's size on disk;
- with --pytest: `python -m pytest -q` timed in this venv.

Goals: demo under 3 minutes quiet, the same verdict in every run; demo install under 2 GB and 2 minutes
from a warm cache; `edgekit --help` under 0.5 s; pytest under 15 minutes on 2 cores.

Run: .venv/bin/python benchmarks/quickstart.py [--demo-runs 3] [--install] [--pytest] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EDGEKIT = Path(sys.executable).parent / "edgekit"
GOALS = {"demo_s": 180.0, "install_gb": 2.0, "install_s": 120.0, "help_s": 0.5, "pytest_s": 900.0}


def timed(argv: list[str], cwd: Path | None = None, **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - t0, done


def startup(work: Path) -> dict:
    commands = {"edgekit --help": [str(EDGEKIT), "--help"], "typo'd command": [str(EDGEKIT), "deplyo"],
                "missing file": [str(EDGEKIT), "bench", str(work / "nosuch.onnx")]}
    return {name: round(statistics.median(timed(argv)[0] for _ in range(5)), 3) for name, argv in commands.items()}


@contextlib.contextmanager
def cpu_hog(on: bool):
    hog = None
    if on and shutil.which("stress-ng"):
        hog = subprocess.Popen(["stress-ng", "--cpu", str(os.cpu_count() or 2), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield hog is not None
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()


def demo_run(work: Path, k: int, loaded: bool) -> dict:
    out = work / f"demo-{k}"
    shutil.rmtree(out, ignore_errors=True)
    with cpu_hog(loaded) as hogged:
        seconds, done = timed([str(EDGEKIT), "demo", "-o", str(out)], cwd=work)
    verdict = []
    with contextlib.suppress(OSError, ValueError):
        report = json.loads((out / "report.json").read_text())
        verdict = [f"{r['profile']} {r['precision']} {row_result(r)}" for r in report["results"]]
    return {"run": k, "beside_cpu_hog": hogged, "seconds": round(seconds, 1), "exit_code": done.returncode,
            "verdict": verdict}


def row_result(row: dict) -> str:
    if row["status"] != "ok":
        return row["status"]
    return "pass" if row.get("passed") else "FAIL"


def install(work: Path) -> dict:
    venv = work / "demo-venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    seconds, done = timed([str(venv / "bin" / "pip"), "install", "-q", f"{ROOT}[demo]"])
    size = subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True).stdout.split()[0]
    return {"seconds": round(seconds, 1), "exit_code": done.returncode, "gb": round(int(size) / 1e9, 2)}


def pytest_time() -> dict:
    seconds, done = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ROOT)
    return {"seconds": round(seconds, 1), "exit_code": done.returncode, "summary": done.stdout.strip().splitlines()[-1:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-runs", type=int, default=3)
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--pytest", action="store_true")
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"goals": GOALS, "startup_s": startup(work)}
    print("start-up (median of 5):", ", ".join(f"{k} {v} s" for k, v in result["startup_s"].items()),
          "ok" if result["startup_s"]["edgekit --help"] < GOALS["help_s"] else "MISSED")
    runs = []
    for k in range(args.demo_runs):
        runs.append(demo_run(work, k + 1, loaded=(k == 1)))
        r = runs[-1]
        print(f"demo run {r['run']}{' beside a CPU hog' if r['beside_cpu_hog'] else ''}: {r['seconds']} s, "
              f"exit {r['exit_code']}: {'; '.join(r['verdict']) or 'no report'}")
    if runs:
        same = all(r["verdict"] == runs[0]["verdict"] and r["exit_code"] == runs[0]["exit_code"] for r in runs)
        quiet = [r["seconds"] for r in runs if not r["beside_cpu_hog"]]
        print(f"demo: {'the same verdict in every run' if same else 'VERDICTS DIFFER'}; quiet median "
              f"{statistics.median(quiet)} s {'ok' if statistics.median(quiet) < GOALS['demo_s'] else 'MISSED'}")
    result["demo"] = runs
    if args.install:
        result["install"] = install(work)
        i = result["install"]
        print(f"demo install: {i['seconds']} s, {i['gb']} GB, exit {i['exit_code']} "
              f"{'ok' if i['gb'] < GOALS['install_gb'] and i['seconds'] < GOALS['install_s'] else 'MISSED'}")
    if args.pytest:
        result["pytest"] = pytest_time()
        print(f"pytest: {result['pytest']['seconds']} s, {result['pytest']['summary']}")
    (work / "quickstart.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
