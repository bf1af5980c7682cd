"""A two-process torchrun job, again and again: does every run exit cleanly?

Issue 20: about one run in seven of this command ended with rank 1 printing
"terminate called without an active exception" (SIGABRT) and torchrun reporting
the job FAILED, after the checkpoint was written. The cause and the fix are in
`charlm.runtime.distributed.DistContext._hold`; tests/test_distributed.py checks the
mechanism, and this loop the behaviour (the shape of
tests/test_distributed.py::test_torchrun_two_processes_train_and_resume), the
train-and-resume test itself included. Figures go to benchmarks/results_ddp_exit.md.

    python benchmarks/ddp_exit_loop.py --rounds 50
    python benchmarks/ddp_exit_loop.py --rounds 50 --pytest
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"
OPTS = "--hidden 16 --emb 8 --layers 1 --batch-size 2 --bptt 16 --eval-interval 10 --log-interval 5"
OPTS += " --eval-streams 2 --quiet --max-steps 20"


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def one_round(work: Path, use_pytest: bool) -> tuple[bool, str]:
    """(exited cleanly, the last lines of its output)."""
    if use_pytest:
        test = str(ROOT / "tests" / "test_distributed.py")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test, "-k", "torchrun_two_processes"]
    else:
        shutil.rmtree(work / "run", ignore_errors=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "charlm",
               "train", str(work / "text.txt"), "--out", str(work / "run"), *OPTS.split()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    text = done.stdout + done.stderr
    clean = done.returncode == 0 and "terminate called" not in text
    return clean, "\n".join(text.strip().splitlines()[-3:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--pytest", action="store_true", help="run the train-and-resume test instead of one command")
    args = ap.parse_args()
    failures = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "text.txt").write_bytes(CORPUS.read_bytes()[:200_000])
        for i in range(1, args.rounds + 1):
            clean, tail = one_round(work, args.pytest)
            if not clean:
                failures += 1
                print(f"round {i}: FAILED\n{tail}", flush=True)
    what = "tests/test_distributed.py::test_torchrun_two_processes_train_and_resume" if args.pytest else "torchrun"
    line = (
        f"| {datetime.now():%Y-%m-%d} | {cpu_name()}, {platform.python_version()} | {what} | "
        f"{args.rounds} | {failures} | {time.perf_counter() - t0:.0f} s |"
    )
    print(line)
    with open(HERE / "results_ddp_exit.md", "a", encoding="utf-8") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
