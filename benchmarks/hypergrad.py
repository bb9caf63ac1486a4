"""Efficiency of MELTR's hypergradients: meltr's estimators x backends, the official three-call algorithm, Betty and
TorchOpt, on the UniVL-style backbone; Table 8 of MELTR as overhead per epoch; a sweep over model size.

    python benchmarks/hypergrad.py             # everything (~1 h on 2 idle cores) -> docs/hypergrad-benchmark.md
    python benchmarks/hypergrad.py --key-rows  # the rows of the cheap identity meta steps only (~1 h on a loaded
                                               # machine); the other rows are carried over, marked, from the last
                                               # full run's report (PREVIOUS_FULL_RUN in git)
    python benchmarks/hypergrad.py --new-rows  # the epochs of this round's reuse options (cache at the scope
                                               # boundary, meta batch = next inner batch) beside two reference
                                               # rows, spliced into the report as a section of its own
    python benchmarks/hypergrad.py --quick     # a ~2-minute smoke version on a small backbone (same code paths)

The script creates ``.bench-venv`` in the repository root on first use (torch, TorchOpt, Betty: the pins of
``benchmarks/requirements-peers.txt``; meltr from ``src`` on ``PYTHONPATH``) and runs every measurement in its own
process of that environment (``benchmarks/_hypergrad_worker.py``). Times are medians of per-round ratios to the
plain multi-task training step measured in the same process, the two interleaved; peak memory is the rise of
``VmHWM`` over the process's resident set after setup.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".bench-venv"
PYTHON = BENCH_VENV / "bin" / "python"
WORKER = ROOT / "benchmarks" / "_hypergrad_worker.py"
REQUIREMENTS = ROOT / "benchmarks" / "requirements-peers.txt"
DOC = ROOT / "docs" / "hypergrad-benchmark.md"

ESTIMATORS = ("identity", "neumann", "cg", "unrolled", "stocbio")
BACKENDS = ("double_backward", "jvp", "finite_difference")
PEERS = ("betty:darts", "betty:neumann", "betty:cg", "torchopt:neumann", "torchopt:cg")
EXPENSIVE = ("neumann", "cg", "stocbio")

FULL = {
    "batch": 32,
    "size": {},  # the default UniVL-style backbone (3.8M parameters)
    "rounds": 3,
    "key_rounds": 6,  # the official algorithm and the identity estimator: the headline ratios
    "expensive_rounds": 2,
    "epoch_steps": 15,
    "meta_every": 3,
    "accuracy_batch": 8,
    "sweep_batch": 8,
    "sweep_rounds": 2,
    "sweep": [
        {"dim": 96, "num_heads": 4, "ff_dim": 384, "text_layers": 2, "video_layers": 1, "cross_layers": 2,
         "decoder_layers": 2},
        {},
        {"dim": 384, "num_heads": 6, "ff_dim": 1536},
        {"dim": 512, "num_heads": 8, "ff_dim": 2048, "text_layers": 3, "cross_layers": 3, "decoder_layers": 3},
        {"dim": 768, "num_heads": 12, "ff_dim": 3072, "text_layers": 4, "cross_layers": 4, "decoder_layers": 4},
    ],
    "sweep_methods": ["official", "meltr:identity:jvp", "meltr:identity:finite_difference"],
}  # fmt: skip
SMALL = {"dim": 64, "num_heads": 4, "ff_dim": 256, "text_layers": 1, "video_layers": 1, "cross_layers": 1,
         "decoder_layers": 1}  # fmt: skip
QUICK = {
    **FULL,
    "batch": 8,
    "size": SMALL,
    "rounds": 2,
    "key_rounds": 2,
    "expensive_rounds": 1,
    "epoch_steps": 6,
    "accuracy_batch": 4,
    "sweep_batch": 4,
    "sweep_rounds": 1,
    "sweep": [{**SMALL, "dim": 32, "num_heads": 2, "ff_dim": 128}, SMALL],
    "sweep_methods": ["official", "meltr:identity:jvp"],
    "smoke": True,  # Hessian-based estimators with the jvp backend only, three epochs
}
FD_SCALES = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
FORWARD_FD_SCALES = (1e-4, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7)
SCOPES = ("last1", "last2", "head")  # named scopes whose cosine to the full hypergradient is measured
QUIET = {"track_sensitivity": False, "check_finite_every": 0}  # no logging-only work in the inner step
REUSE = {"meta_train_batch": "current"}
CACHE = {"cache_scope_inputs": True}  # the trunk below the scope recorded once per batch and replayed (exact)
NEXT = {"meta_source": "next"}  # the meta batch is the next inner batch, its forward shared
# The commit whose docs/hypergrad-benchmark.md holds the last full run: --key-rows carries its other rows over.
PREVIOUS_FULL_RUN = "a9d770e"
KEY_GRID = (
    "official",
    "meltr:identity:double_backward",
    "meltr:identity:jvp",
    "meltr:identity:finite_difference",
    "meltr:identity:forward_difference",
    "meltr:identity:jvp:last1",
    "meltr:identity:forward_difference:last1",
    "betty:darts",
)
KEY = {**FULL, "key_rounds": 4, "rounds": 3, "epoch_steps": 12, "key_only": True}
NEW = {**KEY, "new_only": True}


def reuse_rows(every: int, others: tuple[int, ...] = (1, 10)) -> list[dict]:
    """The epochs of the reuse options of issue 21's second round, each on top of the fastest options before it
    (current train-side batch, no logging-only work): the cache at the scope boundary, the meta batch taken from the
    next inner step, both; full scope where the option allows it."""
    quiet = {**REUSE, **QUIET}
    scoped = "meltr:identity:forward_difference:last1"
    rows = []
    for at in (every, *others):
        rows += [
            {"method": scoped, "meta_every": at, "options": {**quiet, **CACHE}},
            {"method": scoped, "meta_every": at, "options": {**quiet, **CACHE, **NEXT}},
            {"method": "meltr:identity:forward_difference", "meta_every": at, "options": {**quiet, **NEXT}},
        ]
    rows.append({"method": "meltr:identity:jvp:last1", "meta_every": every, "options": {**quiet, **CACHE}})
    return rows


def new_plan(config: dict) -> list[dict]:
    """``--new-rows``: the reuse rows at the recipe's meta_every first, with the recipe's default and the previous
    fastest option measured in the same run for a side-by-side comparison."""
    every = config["meta_every"]
    first = [
        {"method": "meltr:identity:jvp", "meta_every": every},
        {"method": "meltr:identity:forward_difference:last1", "meta_every": every, "options": {**REUSE, **QUIET}},
    ]
    return first + reuse_rows(every)


def epoch_plan(config: dict) -> list[dict]:
    """The Table 8 epochs: the five estimators at the recipe's ``meta_every``, then the identity estimator's options
    (backend, reuse of the inner forward, no logging-only work), full and scoped, at ``meta_every`` 1, 3 and 10."""
    every = config["meta_every"]
    if config.get("new_only"):
        return new_plan(config)
    if config.get("key_only"):
        fast = {"method": "meltr:identity:forward_difference", "options": {**REUSE, **QUIET}}
        fast_scoped = {**fast, "method": "meltr:identity:forward_difference:last1"}
        # most telling first: the default and the fastest options at the recipe's meta_every
        plan = [
            {"method": "meltr:identity:jvp", "meta_every": every},
            {**fast, "meta_every": every},
            {**fast_scoped, "meta_every": every},
            {"method": "meltr:identity:forward_difference", "meta_every": every},
            {"method": "meltr:identity:jvp", "meta_every": every, "options": QUIET},
            {"method": "meltr:identity:forward_difference", "meta_every": every, "options": REUSE},
            {"method": "meltr:identity:jvp:last1", "meta_every": every},
        ]
        for other in (1, 10):
            plan += [{"method": "meltr:identity:jvp", "meta_every": other}, {**fast, "meta_every": other}]
            plan.append({**fast_scoped, "meta_every": other})
        return plan + reuse_rows(every)
    plan = [{"method": f"meltr:{e}:jvp", "meta_every": every} for e in ESTIMATORS]
    plan += [{"method": "meltr:identity:double_backward", "meta_every": every}]
    if config.get("smoke"):
        plan = plan[:2]
    for scope in ("", ":last1"):
        plan.append({"method": f"meltr:identity:jvp{scope}", "meta_every": every})
        plan.append({"method": f"meltr:identity:forward_difference{scope}", "meta_every": every})
        plan.append({"method": f"meltr:identity:forward_difference{scope}", "meta_every": every, "options": REUSE})
        fast = {"method": f"meltr:identity:forward_difference{scope}", "options": {**REUSE, **QUIET}}
        plan.append({**fast, "meta_every": every})
        for other in (1, 10):
            plan.append({"method": f"meltr:identity:jvp{scope}", "meta_every": other})
            plan.append({**fast, "meta_every": other})
    plan.append({"method": "meltr:identity:jvp", "meta_every": every, "options": QUIET})
    return plan + reuse_rows(every)


def epoch_steps(config: dict, every: int) -> int:
    """Steps of an epoch job: the configured epoch, at least two meta periods, whole periods; half with a meta step
    at every step."""
    if every == 1:
        return max(6, config["epoch_steps"] // 2)
    steps = max(config["epoch_steps"], 2 * every)
    return steps - steps % every


def previous_rows(commit: str = PREVIOUS_FULL_RUN) -> dict:
    """The last full run's report, from git: its date, and its table rows and sections by heading."""
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:docs/hypergrad-benchmark.md"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {}
    sections: dict[str, list[str]] = {}
    heading = ""
    generated = ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
            sections[heading] = []
        elif heading:
            sections[heading].append(line)
        elif line.startswith("- Generated by"):
            generated = line.split(" on ", 1)[1].split(" (")[0]
    return {"commit": commit, "generated": generated, "sections": sections}


def epoch_label(entry: dict) -> str:
    options = ",".join(f"{k}={v}" for k, v in sorted(entry.get("options", {}).items()))
    return f"{entry['method']}|every={entry['meta_every']}|{options}"


# -- environment ---------------------------------------------------------------------------------------------------
def ensure_bench_venv() -> None:
    """Create ``.bench-venv`` with the peers' pinned versions (once; a stamp records the requirements used)."""
    stamp = BENCH_VENV / ".installed"
    wanted = REQUIREMENTS.read_text()
    if stamp.exists() and stamp.read_text() == wanted and PYTHON.exists():
        return
    print(f"creating {BENCH_VENV} (torch, TorchOpt, Betty; a few minutes, once)", flush=True)
    if not PYTHON.exists():
        venv.create(BENCH_VENV, with_pip=True)
    (BENCH_VENV / ".gitignore").write_text("*\n")  # nothing of it belongs in git
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    # Betty 0.2.1 declares an old Python bound and would pull its own torch; it runs as is with torch 2.13.
    subprocess.run([*pip, "--no-deps", "--ignore-requires-python", "betty-ml==0.2.1"], check=True)
    stamp.write_text(wanted)


def run_job(job: dict, threads: int, log) -> dict:
    """One measurement in a fresh process of the benchmark environment."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONWARNINGS"] = "ignore"
    start = time.perf_counter()
    done = subprocess.run(
        [str(PYTHON), str(WORKER), json.dumps({**job, "threads": threads})],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    label = f"{job['kind']:<8} {job.get('method', '')} {job.get('size', '') or ''}".rstrip()
    if done.returncode != 0 or not lines:
        print(f"  FAILED {label}\n{done.stderr[-3000:]}", flush=True)
        log.write(json.dumps({"job": job, "error": done.stderr[-3000:]}) + "\n")
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no result"}
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"  {time.perf_counter() - start:6.1f}s  {label}", flush=True)
    log.write(json.dumps({"job": job, "result": result}) + "\n")
    log.flush()
    return result


# -- the plan ------------------------------------------------------------------------------------------------------
def grid_methods() -> list[str]:
    methods = ["official"]
    for estimator in ESTIMATORS:
        methods += [f"meltr:{estimator}:{backend}" for backend in BACKENDS]
    methods += ["meltr:identity:jvp:last1", "meltr:identity:double_backward:last1"]
    methods += ["meltr:identity:forward_difference", "meltr:identity:forward_difference:last1"]
    return methods + list(PEERS)


def accuracy_methods() -> tuple[list[str], list[str]]:
    """(float32 methods, float64 references)."""
    float32 = ["official"]
    for estimator in ("identity", "neumann", "cg", "unrolled"):
        float32 += [f"meltr:{estimator}:{backend}" for backend in BACKENDS]
    float32 += ["meltr:identity:forward_difference", "meltr:unrolled:forward_difference"]
    float32 += [f"meltr:identity:jvp:{scope}" for scope in SCOPES] + ["meltr:identity:forward_difference:last1"]
    float32 += [f"fd_scale:{scale:g}" for scale in FD_SCALES]
    float32 += [f"forward_fd_scale:{scale:g}" for scale in FORWARD_FD_SCALES] + list(PEERS)
    references = [f"meltr:{e}:double_backward" for e in ("identity", "neumann", "cg", "unrolled")]
    return float32, [*references, "nodirect:identity:double_backward", "plaincg"]


def resumed_results(raw_path: Path) -> dict | None:
    """The results of an interrupted run: its raw file, with the epochs its job log recorded after it was written."""
    if not raw_path.exists():
        return None
    results = json.loads(raw_path.read_text())
    log_path = raw_path.with_suffix(".log.jsonl")
    for line in log_path.read_text().splitlines() if log_path.exists() else []:
        record = json.loads(line)
        job = record["job"]
        if job["kind"] == "epoch" and "result" in record:
            entry = {k: job[k] for k in ("method", "meta_every", "options") if k in job}
            results["epoch"].setdefault(epoch_label(entry), {**record["result"], "entry": entry})
    return results


def run_all(config: dict, threads: int, raw_path: Path, resume: bool = False) -> dict:
    results: dict = {"config": config, "threads": threads, "grid": {}, "epoch": {}, "sweep": [], "accuracy": {}}
    results["load_before"] = os.getloadavg()
    results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    previous = resumed_results(raw_path) if resume else None
    if previous is not None:
        results = {**previous, "config": config, "threads": threads}
        results["resumed"] = [*results.get("resumed", []), time.strftime("%Y-%m-%d %H:%M:%S %Z")]
    start = time.perf_counter() - results.get("wall_s", 0.0)
    with open(raw_path.with_suffix(".log.jsonl"), "a" if previous is not None else "w") as log:
        print("meta steps on the reference backbone", flush=True)
        for method in [] if config.get("new_only") else grid_methods():
            if config.get("key_only") and method not in KEY_GRID:
                continue
            if "ratios" in results["grid"].get(method, {}):
                continue  # measured before the run was interrupted
            if config.get("smoke") and method.split(":")[1:2] in (["neumann"], ["cg"], ["stocbio"], ["unrolled"]):
                if ":jvp" not in method:
                    continue
            rounds = config["expensive_rounds"] if any(f":{e}" in method for e in EXPENSIVE) else config["rounds"]
            if method.startswith(("betty:neumann", "betty:cg", "torchopt")):
                rounds = config["expensive_rounds"]
            if method == "official" or (method.startswith("meltr:identity:") and method.count(":") == 2):
                rounds = config["key_rounds"]
            job = {"kind": "time", "method": method, "batch": config["batch"], "size": config["size"]}
            results["grid"][method] = run_job({**job, "rounds": rounds}, threads, log)

        print("accuracy against float64", flush=True)
        float32, references = accuracy_methods()
        out = raw_path.parent / "accuracy"
        common = {"kind": "accuracy", "batch": config["accuracy_batch"], "size": config["size"]}
        files = [str(out) + "-32.pt", str(out) + "-64.pt"]
        if config.get("new_only"):
            pass  # the reuse options are exact: their hypergradients are the accuracy table's rows
        elif results.get("accuracy_files") != files or not all(Path(f).exists() for f in files):
            results["accuracy_stats"] = run_job({**common, "methods": float32, "out": files[0]}, threads, log)
            run_job({**common, "methods": references, "out": files[1], "float64": True}, threads, log)
            results["accuracy_files"] = files  # compared by the report

        results["wall_s"] = time.perf_counter() - start
        raw_path.write_text(json.dumps(results, indent=1))  # a partial result survives an interrupted run
        print("epochs (Table 8)", flush=True)
        for entry in epoch_plan(config):
            if "meltr_step_s" in results["epoch"].get(epoch_label(entry), {}):
                continue
            job = {"kind": "epoch", "batch": config["batch"], "size": config["size"], **entry}
            job["steps"] = epoch_steps(config, entry["meta_every"])
            result = run_job(job, threads, log)
            results["epoch"][epoch_label(entry)] = {**result, "entry": entry}
            results["wall_s"] = time.perf_counter() - start
            raw_path.write_text(json.dumps(results, indent=1))

        print("size sweep", flush=True)
        for size in [] if config.get("key_only") else config["sweep"]:
            row = {"size": size, "methods": {}}
            for method in config["sweep_methods"]:
                job = {"kind": "time", "method": method, "batch": config["sweep_batch"], "size": size}
                row["methods"][method] = run_job({**job, "rounds": config["sweep_rounds"]}, threads, log)
            results["sweep"].append(row)
    results["load_after"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - start
    raw_path.write_text(json.dumps(results, indent=1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run on a small backbone")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads per measurement (default 1: on a shared 2-core machine two OpenMP threads stall at "
        "every parallel region while another process holds a core, and the ratios then measure the neighbours)",
    )
    parser.add_argument(
        "--key-rows",
        action="store_true",
        help="measure only the identity estimator's rows (meta steps, epochs, accuracy); carry the other rows over "
        "from the last full run's report, marked",
    )
    parser.add_argument(
        "--new-rows",
        action="store_true",
        help="measure only the epochs of the reuse options (cache_scope_inputs, meta_source: next) and two reference "
        "rows; splice them into the existing report as a section",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run: keep the rows its raw results hold"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the last raw results")
    parser.add_argument(
        "--output", type=Path, default=None, help="Markdown report (default docs/hypergrad-benchmark.md)"
    )
    args = parser.parse_args()
    results_dir = BENCH_VENV / "results"
    # The smoke run's report stays out of docs/: its numbers are for a toy backbone.
    output = args.output or (results_dir / "quick.md" if args.quick else DOC)
    name = "quick" if args.quick else "new" if args.new_rows else "key" if args.key_rows else "full"
    raw_path = results_dir / f"{name}.json"

    ensure_bench_venv()  # every measurement runs in a subprocess of .bench-venv; this process plans and reports
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads(raw_path.read_text())  # fails early without a previous run
        results.setdefault("load_after", os.getloadavg())  # an interrupted run's raw results end early
    else:
        config = QUICK if args.quick else NEW if args.new_rows else KEY if args.key_rows else FULL
        results = run_all(config, args.threads, raw_path, resume=args.resume)
    if results["config"].get("key_only") and not results["config"].get("new_only"):
        results["previous"] = previous_rows()
    raw_path.write_text(json.dumps(results, indent=1))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]))
    subprocess.run(
        [str(PYTHON), str(ROOT / "benchmarks" / "_hypergrad_report.py"), str(raw_path), str(output)],
        check=True,
        env=env,
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
