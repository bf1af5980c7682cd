"""Many prompts at once (`charlm generate --prompts`) against a loop of single `charlm generate` calls (issue 23).

    python benchmarks/bench_prompts.py --checkpoint DIR [--prompts 256] [--length 200] [--loop 24]
        [--old-tree PATH] [--out benchmarks/results_prompts.md]

DIR: the default char model (`charlm train corpora/tinyshakespeare.txt --time-budget 3m`).
Prompts: --prompts slices of tinyshakespeare starting at random places, 1 to 200 characters long (mixed
lengths), sampled at temperature 0.9, prompt i with seed 1000 + i.

- batched: all prompts through `LanguageModel.generate_many` (what --prompts runs), batch size 256;
- yardstick: what one `charlm generate --prompt P --seed S` call does after loading the model (a stream of
  one sample, as the command streams it to the terminal), for the first --loop prompts, one after another;
- identical: every prompt's batched text against `LanguageModel.generate(P, seed=S)` alone;
- with --old-tree (a checkout of the tree before this change): single-call sampling speed of that tree and
  this one on the same prompts, turn about, to see what the new sampler costs when every control is off.
Model load is excluded from every time. Target: batched tokens/s >= 8x the yardstick's, identical texts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import charlm  # noqa: E402

SHAKES = ROOT / "corpora" / "tinyshakespeare.txt"

SINGLE = """
import sys, time, json, torch
sys.path.insert(0, {tree!r})
import charlm
lm = charlm.load({ckpt!r}, device="cpu")
prompts = json.loads({prompts!r})
best = 0.0
for _ in range(2):
    tokens, start = 0, time.perf_counter()
    for i, p in enumerate(prompts):
        with lm.stream(p, max_new_tokens={length}, temperature=0.9, seed=1000 + i) as s:
            for _piece in s:
                pass
        tokens += s.result.num_tokens
    best = max(best, tokens / (time.perf_counter() - start))
print(json.dumps({{"tokens_per_s": best, "charlm": charlm.__file__}}))
"""


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def make_prompts(n: int) -> list[str]:
    text = SHAKES.read_text(encoding="utf-8")
    rng = random.Random(0)
    out = []
    for _ in range(n):
        start = rng.randrange(len(text) - 250)
        out.append(text[start : start + rng.randint(1, 200)])
    return out


def single_rate(tree: Path, ckpt: Path, prompts: list[str], length: int) -> float:
    code = SINGLE.format(tree=str(tree), ckpt=str(ckpt), prompts=json.dumps(prompts), length=length)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--loop", type=int, default=24)
    ap.add_argument("--old-tree", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_prompts.md")
    a = ap.parse_args()
    lm = charlm.load(a.checkpoint, device="cpu")
    prompts = make_prompts(a.prompts)
    options = lm.decoding(max_new_tokens=a.length, temperature=0.9)
    items = [{"prompt": p, "seed": 1000 + i} for i, p in enumerate(prompts)]

    list(lm.generate_many(items[:8], options))  # warm
    start = time.perf_counter()
    batched = list(lm.generate_many(items, options, batch_size=256))
    batch_s = time.perf_counter() - start
    batch_tokens = sum(g.num_tokens for c in batched for g in c)

    loop_tokens, start = 0, time.perf_counter()
    for i, p in enumerate(prompts[: a.loop]):
        with lm.stream(p, options, seed=1000 + i) as s:
            for _piece in s:
                pass
        assert s.result is not None
        loop_tokens += s.result.num_tokens
    loop_s = time.perf_counter() - start

    same = 0
    first_diff = None
    for i, (p, c) in enumerate(zip(prompts, batched)):
        alone = lm.generate(p, options, seed=1000 + i).text
        if alone == c.text:
            same += 1
        elif first_diff is None:
            first_diff = i

    rows = [
        ("batched (--prompts), batch 256", len(prompts), batch_tokens, batch_s),
        ("loop of single generate calls (yardstick)", a.loop, loop_tokens, loop_s),
    ]
    ratio = (batch_tokens / batch_s) / (loop_tokens / loop_s)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {now}: {len(prompts)} prompts x {a.length} new tokens",
        "",
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}. Model: "
        f"{a.checkpoint} ({lm.model.config.summary()}).",
        "",
        "| run | prompts | tokens | seconds | tokens/s |",
        "|---|---:|---:|---:|---:|",
        *[f"| {name} | {n} | {t:,} | {s:.2f} | {t / s:,.0f} |" for name, n, t, s in rows],
        "",
        f"- batched / loop: **{ratio:.1f}x** (target >= 8x)",
        f"- identical text to decoding each prompt alone with its seed: **{same}/{len(prompts)}**"
        + (f" (first difference: prompt {first_diff})" if first_diff is not None else ""),
    ]
    if a.old_tree:
        sub = prompts[: a.loop]
        old = [single_rate(a.old_tree, a.checkpoint, sub, a.length) for _ in range(2)]
        new = [single_rate(ROOT, a.checkpoint, sub, a.length) for _ in range(2)]
        lines += [
            f"- plain sampling, one sequence, every control off: this tree {max(new):,.0f} tokens/s, "
            f"the tree before ({a.old_tree}) {max(old):,.0f}: ratio **{max(new) / max(old):.3f}** (best of 2 turns "
            "each, taken in turn)",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    head = "" if a.out.exists() else "# Many prompts at once (benchmarks/bench_prompts.py)\n\n"
    with a.out.open("a", encoding="utf-8") as f:
        f.write(head + text + "\n")


if __name__ == "__main__":
    main()
