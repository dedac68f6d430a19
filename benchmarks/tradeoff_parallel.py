"""Runs `bench_tradeoff.py` as many one-run, one-seed processes at a time.

On a machine with many cores (or a GPU that one small model leaves idle),
the trade-off benchmark's runs are independent: this driver starts each
(run, seed) as its own `bench_tradeoff.py` process, `--jobs` at a time,
each writing `OUT_DIR/<run>_s<seed>.json` and `.log`, then prints the
merged table (`bench_tradeoff.py --table-from`). Wall times of runs that
shared the machine are not comparable with one another; their CPU times and
training MACs are.

    python benchmarks/tradeoff_parallel.py --out-dir results_60k --jobs 8 \\
        --seeds 0 1 2 --uniform-widths 0.75 0.5 0.4 0.3 \\
        --adp adp={} adp-s2='{"removal_scale": 2}' -- --train-samples 60000

Arguments after `--` go to every `bench_tradeoff.py` process.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from concurrent import futures

_BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "bench_tradeoff.py")


def jobs(args):
    """(name, bench_tradeoff arguments) per run and seed, most important
    first: dense, each ADP variant, uniform widths, then the paper's rule."""
    runs = []
    if args.dense:
        runs.append(("dense", ["--runs", "dense"]))
    for item in args.adp:
        name, _, policy = item.partition("=")
        runs.append((name, ["--runs", "adp", "--adp-name", name,
                            "--adp-policy", policy or "{}"]))
    for width in args.uniform_widths:
        runs.append((f"uniform@{width:g}",
                     ["--runs", "uniform", "--uniform-widths", f"{width:g}"]))
    if args.paper:
        runs.append(("adp-paper", ["--runs", "adp-paper"]))
    return [
        (f"{name}_s{seed}", [*argv, "--seeds", str(seed)])
        for name, argv in runs
        for seed in args.seeds
    ]


def run_one(name, argv, out_dir, passthrough):
    out = os.path.join(out_dir, f"{name}.json")
    command = [sys.executable, _BENCH, *argv, *passthrough, "--out", out]
    start = time.perf_counter()
    with open(os.path.join(out_dir, f"{name}.log"), "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    return name, code, time.perf_counter() - start


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--uniform-widths", type=float, nargs="*",
                        default=[0.75, 0.5, 0.4, 0.3])
    parser.add_argument("--adp", nargs="*", default=["adp={}"],
                        metavar="NAME=POLICY_JSON")
    parser.add_argument("--no-dense", dest="dense", action="store_false")
    parser.add_argument("--no-paper", dest="paper", action="store_false")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    todo = jobs(args)
    print(f"{len(todo)} runs, {args.jobs} at a time", flush=True)
    with futures.ThreadPoolExecutor(args.jobs) as pool:
        pending = [pool.submit(run_one, name, job, args.out_dir, passthrough)
                   for name, job in todo]
        for done in futures.as_completed(pending):
            name, code, seconds = done.result()
            print(f"{name}: exit {code} after {seconds:.0f} s", flush=True)
    finished = sorted(
        path for path in glob.glob(os.path.join(args.out_dir, "*.json"))
        if json.load(open(path)).get("rows")
    )
    if finished:
        subprocess.call([sys.executable, _BENCH, "--table-from", *finished,
                         "--plot", os.path.join(args.out_dir, "tradeoff.png")])


if __name__ == "__main__":
    main()
