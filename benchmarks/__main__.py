"""`python -m benchmarks [--smoke] [--only NAME]`: run the benchmark modules, write the results.

Every module `benchmarks/<name>.py` that defines `run(smoke)` is run in its own process (so a
crash, a hang or a leaked thread cannot take the others down), its result is written to
`<out>/<name>.json`, and `BENCHMARKS.md` is regenerated from every result in `<out>`.
A full run writes to `benchmarks/results/` and the repository's `BENCHMARKS.md`; `--smoke`
writes both to a temporary folder so CI leaves the tree clean. Exit status 1 if any module
failed (unmet goals are reported, not failures).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import common

PACKAGE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__main__", "__init__", "common", "apps"}
ORDER = ("simulation", "systems", "ingest", "queue", "retrain")
SMOKE_DEADLINE = 105.0  # `make bench-smoke` must end within 2 minutes, stopping included
FULL_TIMEOUT = 3 * 3600.0
KILL_GRACE = 8.0


def discover() -> list[str]:
    """Modules of this package that define a top-level `run(smoke)`, the known ones first."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem in NOT_BENCHMARKS or path.stem.startswith("_"):
            continue
        with contextlib.suppress(SyntaxError, OSError):
            tree = ast.parse(path.read_text())
            if any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body):
                found.append(path.stem)
    return sorted(found, key=lambda name: (ORDER.index(name) if name in ORDER else 99, name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny runs, under 2 minutes")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this module")
    parser.add_argument("--out", type=Path, help="results folder (default: see above)")
    parser.add_argument("--list", action="store_true", help="list the modules and stop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.smoke, args.result)
    signal.signal(signal.SIGTERM, _interrupted)  # CI or `kill`: stop the children first
    signal.signal(signal.SIGINT, _interrupted)  # also when started in the background
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"no benchmark module named {', '.join(unknown)} (have: {', '.join(names)})")
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="feedback-bench-smoke-")) if args.smoke else common.RESULTS
    )
    return run_all([n for n in names if not args.only or n in args.only], args.smoke, out)


def _interrupted(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # `run_all`'s `finally` stops the running children


def run_all(names: list[str], smoke: bool, out: Path) -> int:
    """Run the modules, write their JSON, regenerate BENCHMARKS.md; 1 if any failed.

    A full run measures one module at a time. A smoke run only checks that everything still
    works, so it starts all modules at once: they mostly wait on servers, and together they
    must finish within 2 minutes.
    """
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="feedback-bench-logs-"))
    started = time.monotonic()
    print(f"benchmarks: {', '.join(names)} -> {out}{' (smoke)' if smoke else ''}", flush=True)
    write_json(out / "machine.json", {**common.machine_facts(), "smoke": smoke, "at": now()})
    children: list[Child] = []
    try:
        if smoke:
            deadline = started + SMOKE_DEADLINE
            children = [Child(name, smoke, out, logs) for name in names]
            while time.monotonic() < deadline and sum(c.running() for c in children):
                time.sleep(0.2)  # sum, not any: every child is polled, so each end is timed
            results = [child.collect(deadline) for child in children]
        else:
            results = []
            for name in names:
                children.append(Child(name, smoke, out, logs))
                results.append(children[-1].collect(time.monotonic() + FULL_TIMEOUT))
    finally:  # Ctrl-C or a crash here: the children run in their own sessions, stop them
        for child in children:
            if child.running():
                child.collect(0.0)
    for result in results:
        write_json(out / f"{result['name']}.json", result)
        print(status_line(result), flush=True)
    report = (out if smoke or out != common.RESULTS else common.ROOT) / "BENCHMARKS.md"
    report.write_text(render(out, report.parent))
    print(f"benchmarks: wrote {report} in {time.monotonic() - started:.0f}s", flush=True)
    failed = [r["name"] for r in results if r["status"] != "ok"]
    if failed:
        print(f"benchmarks: FAILED: {', '.join(failed)} (logs in {logs})", flush=True)
    return 1 if failed else 0


class Child:
    """One module running in its own process (and session), its output in a log file."""

    def __init__(self, name: str, smoke: bool, out: Path, logs: Path) -> None:
        self.name, self.smoke, self.at = name, smoke, now()
        self.result_file, self.log = logs / f"{name}.result.json", logs / f"{name}.log"
        self.marker = f"{name}-{uuid.uuid4().hex}"
        argv = [sys.executable, "-m", "benchmarks", "--child", name]
        argv += ["--result", str(self.result_file), *(["--smoke"] if smoke else [])]
        env = {**os.environ, common.OUT_ENV: str(out), common.MARKER_ENV: self.marker}
        self.started, self.ended = time.monotonic(), 0.0
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                argv,
                cwd=common.ROOT,
                env={**env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        """Whether it still runs (and when it stopped, the first time we see it stopped)."""
        if self.process.poll() is None:
            return True
        self.ended = self.ended or time.monotonic()
        return False

    def collect(self, deadline: float) -> dict[str, Any]:
        """Wait until the deadline (then stop it); return its checked result or the failure."""
        code = wait_or_stop(self.process, deadline - time.monotonic())
        self.running()
        common.kill_marked(self.marker)  # servers it started and could not stop itself
        base = {"name": self.name, "smoke": self.smoke, "at": self.at}
        base["seconds"] = round((self.ended or time.monotonic()) - self.started, 1)
        tail = self.log.read_text(errors="replace")[-3000:]
        if code is None:
            return {**base, "status": "failed", "error": f"stopped at the deadline\n{tail}"}
        if code != 0 or not self.result_file.exists():
            return {**base, "status": "failed", "error": f"exit status {code}\n{tail}"}
        result = json.loads(self.result_file.read_text())
        problem = shape_problem(result)
        if problem:
            return {**base, "status": "failed", "error": f"invalid result: {problem}"}
        return {**result, **base, "status": "ok"}


def wait_or_stop(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait for the child; past `timeout`, SIGTERM its group, then SIGKILL. None if stopped."""
    try:
        return process.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return None


def shape_problem(result: Any) -> str | None:
    """What is wrong with a module's result, or None if it follows the interface."""
    if not isinstance(result, dict):
        return "not an object"
    for key, kind in (("name", str), ("metrics", dict), ("goals", list), ("runs", int)):
        if not isinstance(result.get(key), kind):
            return f"'{key}' must be a {kind.__name__}"
    for goal in result["goals"]:
        if not isinstance(goal, dict) or not {"goal", "value", "target", "met"} <= set(goal):
            return f"every goal needs goal, value, target and met: {goal!r}"
    return None


def child(name: str, smoke: bool, result_file: Path) -> int:
    """Inside the child process: run one module and write what it returned."""

    def _stop(signum: int, _frame: Any) -> None:
        common.hurry()  # stop servers quickly: the harness kills this process soon
        raise SystemExit(128 + signum)  # unwinds `finally` blocks, so services get stopped

    signal.signal(signal.SIGTERM, _stop)
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        result = module.run(smoke)
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        common.stop_all_started()
    write_json(result_file, result)
    return 0


def write_json(path: Path, value: Any) -> None:
    text = json.dumps(clean(value), indent=2, ensure_ascii=False, default=str)
    path.write_text(text + "\n")


def clean(value: Any) -> Any:
    """JSON-safe: numpy numbers become Python numbers, NaN and infinity become null."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def status_line(result: dict[str, Any]) -> str:
    seconds = result.get("seconds", 0)
    if result["status"] != "ok":
        first = (result.get("error") or "").strip().splitlines()[-1:] or ["?"]
        return f"  {result['name']:<12} FAILED after {seconds}s: {first[0][:200]}"
    goals = result["goals"]
    met = sum(bool(g["met"]) for g in goals)
    return f"  {result['name']:<12} ok in {seconds}s: {met} of {len(goals)} goals met"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------- BENCHMARKS.md


def render(out: Path, where: Path) -> str:
    """BENCHMARKS.md from every result in `out`; links are relative to `where`."""
    machine = _load(out / "machine.json") or {}
    found = [_load(out / f"{name}.json") for name in discover()]
    known = {r["name"] for r in found if r}
    extra = [_load(p) for p in sorted(out.glob("*.json")) if p.stem not in known | {"machine"}]
    results = [r for r in [*found, *extra] if r is not None and "status" in r]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{'make bench-smoke' if machine.get('smoke') else 'make bench'}` "
        f"(`python -m benchmarks`), last run {machine.get('at', '?')}. Do not edit by hand: "
        "[docs/benchmarks.md](docs/benchmarks.md) says how to run and read these numbers.",
        "Ratios are measured side by side in the same run; a value shown as `m (a to b)` is the "
        "median of the runs with their minimum and maximum.",
        "",
        *_machine_section(machine),
        *_summary_section(results),
    ]
    for result in results:
        lines += _result_section(result, out, where)
    return "\n".join(lines).rstrip() + "\n"


def _load(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else None
    return None


def _machine_section(machine: dict[str, Any]) -> list[str]:
    sqlite = machine.get("sqlite") or {}
    pragmas = ", ".join(f"{k}={v}" for k, v in (sqlite.get("pragmas") or {}).items())
    postgres = machine.get("postgresql") or {}
    pg = postgres.get("server_version")
    packages = ", ".join(f"{k} {v}" for k, v in (machine.get("packages") or {}).items())
    rows = [
        ("CPU", machine.get("cpu")),
        ("cores", machine.get("cores")),
        ("memory", f"{machine.get('memory_gib')} GiB"),
        ("OS", machine.get("os")),
        ("Python", machine.get("python")),
        ("SQLite", f"{sqlite.get('version')}; the engine sets {pragmas}"),
        ("PostgreSQL", f"{pg} at {postgres.get('url')}" if pg else "not reachable"),
        ("packages", packages),
        ("load average (1, 5, 15 min) at the start", machine.get("load_average")),
        ("HTTP load generator", machine.get("wrk") or "bounded Python client (wrk not found)"),
    ]
    return ["## Machine", "", "| | |", "| --- | --- |", *(_row(k, v) for k, v in rows), ""]


def _summary_section(results: list[dict[str, Any]]) -> list[str]:
    lines = ["## Summary", "", "| benchmark | status | goals met | runs | measured | machine |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        goals = r.get("goals") or []
        met = f"{sum(bool(g.get('met')) for g in goals)} of {len(goals)}"
        status = "ok" if r["status"] == "ok" else "**FAILED**"
        if r.get("smoke"):
            status += " (smoke)"
        note = r.get("machine_note", "")
        lines.append(
            _row(
                f"[{r['name']}](#{r['name']})",
                status,
                met,
                r.get("runs", "-"),
                r.get("at", "?"),
                note,
            )
        )
    return [*lines, ""]


def _result_section(result: dict[str, Any], out: Path, where: Path) -> list[str]:
    lines = [f"## {result['name']}", ""]
    if result["status"] != "ok":
        error = str(result.get("error", "")).strip()[-2500:]
        return [
            *lines,
            "**This benchmark failed**; its numbers are missing.",
            "",
            "```",
            error,
            "```",
            "",
        ]
    lines += [f"Machine: {result.get('machine_note', '')}. Runs: {result.get('runs')}.", ""]
    lines += ["| goal | value | target | met |", "| --- | --- | --- | --- |"]
    lines += [
        _row(g["goal"], _value(g["value"]), g["target"], "met" if g["met"] else "**not met**")
        for g in result["goals"]
    ]
    notes = result.get("notes") or {}
    if isinstance(notes, list):
        notes = {"general": " ".join(map(str, notes))}
    unmet = [g["goal"] for g in result["goals"] if not g["met"]]
    if unmet:
        lines += ["", "Why goals are not met:", ""]
        for goal in unmet:
            why = notes.get(goal) or "the module gave no reason; see the metrics below."
            lines.append(f"- **{goal}**: {why}")
    general = [str(v) for k, v in notes.items() if k not in {g["goal"] for g in result["goals"]}]
    if general:
        lines += ["", "Notes: " + " ".join(general)]
    for table in result.get("tables") or []:
        lines += ["", f"**{table['title']}**", "", _row(*table["columns"])]
        lines += [_row(*(["---"] * len(table["columns"])))]
        lines += [_row(*map(_value, row)) for row in table["rows"]]
    lines += ["", "<details><summary>All metrics</summary>", ""]
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [_row(k, _value(v)) for k, v in result["metrics"].items()]
    lines += ["", "</details>"]
    for plot in result.get("plots") or []:
        link = os.path.relpath(out / plot, where)
        lines += ["", f"![{plot}]({link})"]
    return [*lines, ""]


def _row(*cells: Any) -> str:
    text = [str(c).replace("|", "\\|").replace("\n", " ") for c in cells]
    return "| " + " | ".join(text) + " |"


def _value(value: Any) -> str:
    """A number, a `median (min to max)` summary, or compact JSON."""
    if isinstance(value, dict) and "median" in value:
        if value["median"] is None:
            return "not measured"
        text = f"{_number(value['median'])} ({_number(value['min'])} to {_number(value['max'])})"
        extra = {k: v for k, v in value.items() if k not in {"median", "min", "max", "n"} and v}
        return text + "".join(f"; {k.replace('_', ' ')}: {v}" for k, v in extra.items())
    if isinstance(value, float | int) and not isinstance(value, bool):
        return _number(value)
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _number(value: Any) -> str:
    if not isinstance(value, float | int):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}".replace(",", " ")
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}".replace(",", " ")


if __name__ == "__main__":
    sys.exit(main())
