"""Fuzz `toolchain export --format c` with mutated reference models (issue #11, fuzz acceptance line).

Every case is one seeded mutation (``tests/fuzz_models.py``: byte flips, truncation and structured edits) of a
reference model in ../shared/models/reference, run through the CLI in a forked child with a timeout and an
address-space limit; ``--jobs`` children run at once. Accepted outcomes: exit 0 (engine written) or exit 2 (one
``error:`` line on stderr, nothing written). Anything else (another exit code, a signal, a timeout) is a crash and
is listed with its seed; ``make_case(models, seed)`` reproduces it.

    python benchmarks/fuzz_cengine.py --cases 10000 --jobs 2

Writes benchmarks/results/fuzz_cengine.{json,md}. TFLM's arena measurement is skipped unless --measure-tflm
(it runs an external tool per accepted case and is not what is under test); golden vectors through LiteRT run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import firmware_export.cgen.build  # noqa: E402,F401  (imported before forking: children start warm)
import firmware_export.cgen.generator  # noqa: E402,F401
import toolchain.cli  # noqa: E402,F401
from tests.fuzz_models import (KINDS, check_outcome, collect_cli_case, make_case, poll_cli_case,  # noqa: E402
                               reference_models, start_cli_case)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0, help="first seed (cases use seed, seed+1, ...)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--measure-tflm", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        pass
    models = reference_models()
    if not models:
        sys.exit("no reference models found")
    work = Path(tempfile.mkdtemp(prefix="fuzz_cengine_"))
    by_kind: dict[str, collections.Counter] = {k: collections.Counter() for k in KINDS}
    by_model: dict[str, collections.Counter] = {m: collections.Counter() for m in models}
    crashes, slowest = [], []
    rejected_by: collections.Counter = collections.Counter()
    t_start = time.monotonic()
    pending = list(range(args.seed + args.cases - 1, args.seed - 1, -1))
    running: dict[int, tuple] = {}  # pid -> (seed, name, kind, t0, out dir)
    done = 0

    def record(seed, name, kind, o) -> None:
        nonlocal slowest
        problems = check_outcome(o)
        outcome = o.status if o.status in ("exit0", "exit2") and not problems else "other"
        by_kind[kind][outcome] += 1
        by_model[name][outcome] += 1
        if outcome == "exit2":
            text = o.stderr[0]
            stage = ("reader" if "not a valid TFLite flatbuffer" in text else
                     "validation" if "the model is malformed" in text else "lowering / support checks")
            rejected_by[stage] += 1
        slowest = sorted(slowest + [(round(o.seconds, 3), seed, name, kind, o.status)], reverse=True)[:10]
        if problems:
            crashes.append({"seed": seed, "model": name, "kind": kind, "status": o.status,
                            "problems": problems, "seconds": round(o.seconds, 2)})
            print(f"crash: seed {seed} ({name}, {kind}): {o.status} {problems}", flush=True)

    while pending or running:  # one thread: children are forked from a process without other threads
        while pending and len(running) < args.jobs:
            seed = pending.pop()
            name, kind, data = make_case(models, seed)
            d = work / str(seed)
            d.mkdir()
            (d / "fuzz.tflite").write_bytes(data)
            pid, t0 = start_cli_case(d / "fuzz.tflite", d / "out", measure_tflm=args.measure_tflm)
            running[pid] = (seed, name, kind, t0, d)
        for pid in list(running):
            seed, name, kind, t0, d = running[pid]
            status = poll_cli_case(pid, t0, args.timeout)
            if status is None:
                continue
            del running[pid]
            record(seed, name, kind, collect_cli_case(d / "out", status, t0))
            shutil.rmtree(d, ignore_errors=True)
            done += 1
            if done % 500 == 0:
                print(f"{done}/{args.cases} cases, {len(crashes)} crashes, {time.monotonic() - t_start:.0f} s",
                      flush=True)
        time.sleep(0.002)
    shutil.rmtree(work, ignore_errors=True)
    total = collections.Counter()
    for c in by_kind.values():
        total.update(c)
    result = {
        "cases": args.cases, "first_seed": args.seed, "jobs": args.jobs, "timeout_s": args.timeout,
        "measure_tflm": args.measure_tflm, "wall_s": round(time.monotonic() - t_start, 1),
        "host": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "models": sorted(models),
        "outcomes": {k: total.get(k, 0) for k in ("exit0", "exit2", "other")},
        "exit2_by_stage": dict(rejected_by),
        "by_kind": {k: {o: c.get(o, 0) for o in ("exit0", "exit2", "other")} for k, c in by_kind.items()},
        "by_model": {k: {o: c.get(o, 0) for o in ("exit0", "exit2", "other")} for k, c in by_model.items()},
        "slowest": [{"seconds": s, "seed": sd, "model": m, "kind": k, "status": st} for s, sd, m, k, st in slowest],
        "crashes": crashes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz_cengine.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Fuzzing `toolchain export --format c`", "",
             f"{args.cases:,} seeded mutations (seeds {args.seed}..{args.seed + args.cases - 1}) of the reference "
             f"models {', '.join(sorted(models))}; each run through the CLI in a forked child (timeout "
             f"{args.timeout:g} s, address space 6 GiB), {args.jobs} at a time, golden vectors through LiteRT, TFLM "
             f"arena measurement {'on' if args.measure_tflm else 'off'}. {result['host']}; wall "
             f"{result['wall_s']:,} s. Generator: `tests/fuzz_models.py`, script: `benchmarks/fuzz_cengine.py`.", "",
             f"**exit 0: {result['outcomes']['exit0']:,}, exit 2: {result['outcomes']['exit2']:,}, other "
             f"(crash, hang, wrong exit code or stderr): {result['outcomes']['other']:,}**", "",
             "exit 2 by the stage that refused the model: " + ", ".join(f"{k} {v:,}" for k, v in
                                                                   sorted(rejected_by.items())) + ".", "",
             "| mutation | exit 0 | exit 2 | other |", "|---|---:|---:|---:|"]
    for k, c in result["by_kind"].items():
        lines.append(f"| {k} | {c['exit0']:,} | {c['exit2']:,} | {c['other']:,} |")
    lines += ["", "| model | exit 0 | exit 2 | other |", "|---|---:|---:|---:|"]
    for k, c in result["by_model"].items():
        lines.append(f"| {k} | {c['exit0']:,} | {c['exit2']:,} | {c['other']:,} |")
    lines += ["", "Slowest cases:", ""] + [f"- {s['seconds']} s: seed {s['seed']} ({s['model']}, {s['kind']}, "
                                            f"{s['status']})" for s in result["slowest"]]
    lines += ["", "Crashes:", ""] + ([f"- seed {c['seed']} ({c['model']}, {c['kind']}): {c['status']} "
                                      f"{'; '.join(c['problems'])}" for c in crashes] or ["- none"])
    (args.out / "fuzz_cengine.md").write_text("\n".join(lines) + "\n")
    print(f"exit0 {result['outcomes']['exit0']}, exit2 {result['outcomes']['exit2']}, other "
          f"{result['outcomes']['other']}; {len(crashes)} crashes; wall {result['wall_s']} s")


if __name__ == "__main__":
    main()
