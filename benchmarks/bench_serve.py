"""`charlm serve` under load (issue 24), run by hand under `flock -x /work/bench.lock`.

    python benchmarks/bench_serve.py --checkpoint DIR [--tokens 200] [--clients 1,8,32] [--fuzz 1000]
        [--out benchmarks/results_serve.md]

The server runs as `charlm serve DIR --port 0 -q` in its own process; the clients are asyncio tasks here,
each streaming one completion of --tokens tokens (`stream: true`, a seed of its own, temperature 1, an empty
prompt) over its own HTTP connection. For each client count N, N clients start together, --rounds times
(more rounds for fewer clients, so that each figure has enough first tokens); aggregate tokens per second =
N x tokens / the wall time from the start of a round to its last [DONE], the median round kept; time to first
token = from sending a request to the first chunk with text, median and p99 over every request of that N.
Target: the aggregate rate with 32 clients at least 6x one client alone.

Then --fuzz bad requests (malformed and random bytes, wrong types, values out of range, unknown fields and
models, bodies over the cap, wrong methods and paths), drawn from a seeded generator: each must be answered
4xx with an OpenAI-shaped error, /health must answer 200 afterwards, and the server's resident memory
(VmRSS) is read after a warm-up and after every quarter of the requests.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch

import charlm

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def start_server(ckpt: Path, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "charlm", "serve", str(ckpt), "--port", "0", "-q", "--device", "cpu", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"serving at (\S+)", "".join(lines))
        if found:
            return proc, found.group(1)
        time.sleep(0.05)
    raise SystemExit(f"the server did not start: {''.join(lines)}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


# ------------------------------------------------------------------ throughput and time to first token
async def one_stream(client: httpx.AsyncClient, url: str, tokens: int, seed: int) -> tuple[float, int]:
    """-> (seconds to the first text, completion tokens). The bytes are searched, not parsed, except the usage
    chunk at the end: the clients share the server's cores, so they should cost it little."""
    body = {"prompt": "", "max_tokens": tokens, "seed": seed, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tail = b""
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise SystemExit(f"HTTP {r.status_code}: {await r.aread()!r}")
        async for data in r.aiter_raw():
            if first is None and b'"text":"' in data.replace(b'"text":""', b""):
                first = time.perf_counter() - start
            tail = (tail + data)[-4096:]
    usage = re.search(rb'"completion_tokens":(\d+)', tail)
    if b"data: [DONE]" not in tail or usage is None:
        raise SystemExit(f"a stream ended without its usage and [DONE]: {tail[-300:]!r}")
    return (first if first is not None else float("nan")), int(usage.group(1))


async def round_of(url: str, n: int, tokens: int, seed: int) -> tuple[float, list[float], int]:
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, url, tokens, seed + i) for i in range(n)))
        wall = time.perf_counter() - start
    return wall, [r[0] for r in results], sum(r[1] for r in results)


def load_figures(url: str, counts: list[int], tokens: int, rounds: dict[int, int]) -> list[dict]:
    asyncio.run(round_of(url, 2, 20, 1))  # warm up: connections, the worker's first steps
    rows = []
    for n in counts:
        walls, firsts, total = [], [], 0
        for r in range(rounds[n]):
            wall, ttft, got = asyncio.run(round_of(url, n, tokens, 1000 * n + 100 * r))
            walls.append(wall)
            firsts += ttft
            total += got
        firsts.sort()
        wall = statistics.median(walls)
        rows.append(
            {
                "clients": n,
                "rounds": rounds[n],
                "tokens": total // rounds[n],
                "wall": wall,
                "rate": total / rounds[n] / wall,
                "ttft_median": statistics.median(firsts),
                "ttft_p99": firsts[min(len(firsts) - 1, round(0.99 * (len(firsts) - 1)))],
            }
        )
        print(rows[-1], flush=True)
    return rows


# ------------------------------------------------------------------ the yardstick: the engine alone
def engine_figures(lm: charlm.LanguageModel, counts: list[int], tokens: int, threads: int) -> list[dict]:
    """DecodeBatch in this process, no HTTP: N rows of `tokens` streamed tokens each, added at once."""
    from charlm.sampling import DecodeBatch

    torch.set_num_threads(threads)
    options, prompt = lm.decoding(max_new_tokens=tokens), lm.prompt("")
    rows = []
    for n in counts:
        rates = []
        for r in range(3):
            batch = DecodeBatch(lm.model, lm.tokenizer, max_rows=max(counts))
            start = time.perf_counter()
            for i in range(n):
                batch.add(prompt, options, seed=1000 * n + 100 * r + i)
            while len(batch):
                batch.step()
            rates.append(n * tokens / (time.perf_counter() - start))
        rows.append({"threads": threads, "rows": n, "rate": statistics.median(rates)})
        print(rows[-1], flush=True)
    return rows


# ------------------------------------------------------------------ fuzzed bad requests
FIELDS = ["prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "logprobs", "echo",
          "presence_penalty", "frequency_penalty", "top_k", "min_p", "typical_p", "repetition_penalty",
          "no_repeat_ngram_size", "min_new_tokens", "ban", "lines", "strategy", "beam_width", "stream_options",
          "model", "best_of", "suffix", "logit_bias"]  # fmt: skip
BAD_VALUES = [-1, -(10**30), 10**30, 1e308, -0.5, 7.5, "x", "", [], [1, "a"], {}, {"a": 1}, True, [""], ["x"] * 99,
              "\ud800", "x" * 20000, None]  # fmt: skip


def bad_request(rng: random.Random) -> tuple[str, str, bytes]:
    """(method, path, body) of one bad request."""
    kind = rng.randrange(8)
    if kind == 0:
        return "POST", "/v1/completions", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 1:
        good = json.dumps({"prompt": "ROMEO:", "max_tokens": 5})
        cut = rng.randrange(1, len(good) - 1)
        return "POST", "/v1/completions", good[:cut].encode()
    if kind == 2:
        depth = rng.choice([1000, 5000, 20000])
        return "POST", "/v1/completions", (b"[" * depth) + (b"]" * depth)
    if kind == 3:
        return "POST", "/v1/completions", json.dumps({"prompt": "a", "x" * rng.randrange(1, 9): 1}).encode()
    if kind == 4:
        size = rng.choice([1 << 20, 2 << 20])
        return "POST", "/v1/completions", json.dumps({"prompt": "a" * size}).encode()
    if kind == 5:
        return (
            rng.choice(["GET", "PUT", "DELETE"]),
            rng.choice(["/v1/completions", "/v1/nope", "/admin", "/v1/models/x"]),
            b"",
        )
    if kind == 6:
        return "POST", "/v1/completions", json.dumps({"model": "no-such-model-" + str(rng.randrange(10**6))}).encode()
    body: dict = {"prompt": "ROMEO:", "max_tokens": 5}
    for _ in range(rng.randrange(1, 4)):
        value = rng.choice(BAD_VALUES)
        body[rng.choice(FIELDS)] = value
    # a body whose bad values happen to be valid is made invalid for sure by one value out of range
    body["n"] = rng.choice([0, -3, 10**6, "2", 1.5])
    return "POST", "/v1/completions", json.dumps(body).encode("utf-8", "surrogatepass")


def fuzz(url: str, pid: int, count: int) -> dict:
    rng = random.Random(24)
    statuses: dict[int, int] = {}
    shapeless = 0
    rss = [rss_kib(pid)]
    with httpx.Client(timeout=60) as client:
        for i in range(count):
            method, path, body = bad_request(rng)
            r = client.request(method, url + path, content=body, headers={"content-type": "application/json"})
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            try:
                err = r.json()["error"]
                shapeless += set(err) != {"message", "type", "param", "code"}
            except (ValueError, KeyError, TypeError):
                shapeless += 1
            if (i + 1) % (count // 4) == 0:
                rss.append(rss_kib(pid))
        alive = client.get(url + "/health").status_code == 200
        good = client.post(url + "/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 20}).status_code == 200
    return {"statuses": dict(sorted(statuses.items())), "shapeless": shapeless, "alive": alive and good, "rss_kib": rss}


# ------------------------------------------------------------------ the report
def report(
    args: argparse.Namespace, lm: charlm.LanguageModel, rows: list[dict], engine: list[dict], fz: dict | None
) -> str:
    cfg = lm.info.model_config
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {when}",
        "",
        f"CPU: {cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}; model: {cfg.num_layers} x "
        f"{cfg.hidden_size} {cfg.cell}, {lm.level} level, vocabulary {lm.tokenizer.vocab_size} ({args.checkpoint}); "
        f"server: `charlm serve {' '.join(args.server_args)}` defaults otherwise; {args.tokens} tokens a client",
        "",
        "| clients | rounds | tokens a round | wall s | tokens/s | x one client | TTFT median ms | TTFT p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = rows[0]["rate"] if rows and rows[0]["clients"] == 1 else float("nan")
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['rounds']} | {r['tokens']:,} | {r['wall']:.2f} | {r['rate']:,.0f} | "
            f"{r['rate'] / base:.1f}x | {1000 * r['ttft_median']:.1f} | {1000 * r['ttft_p99']:.1f} |"
        )
    if engine:
        lines += ["", "The engine alone (DecodeBatch in one process, no HTTP; median of 3):", ""]
        lines += ["| threads | rows | tokens/s | x one row |", "|---:|---:|---:|---:|"]
        for e in engine:
            one = next(x["rate"] for x in engine if x["threads"] == e["threads"] and x["rows"] == engine[0]["rows"])
            lines.append(f"| {e['threads']} | {e['rows']} | {e['rate']:,.0f} | {e['rate'] / one:.1f}x |")
    if fz is not None:
        ok = all(400 <= s < 500 for s in fz["statuses"])
        lines += [
            "",
            f"Fuzz: {args.fuzz:,} bad requests, statuses {fz['statuses']} (all 4xx: {'yes' if ok else 'NO'}), "
            f"{fz['shapeless']} without an OpenAI-shaped error body; server alive and answering afterwards: "
            f"{'yes' if fz['alive'] else 'NO'}; VmRSS KiB after warm-up and after each quarter: "
            f"{', '.join(f'{x:,}' for x in fz['rss_kib'])}",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--fuzz", type=int, default=1000)
    ap.add_argument("--server-args", default="", help="more options for charlm serve, e.g. '--max-rows 32'")
    ap.add_argument("--engine-threads", default="1,2", help="thread counts for the engine-alone yardstick ('': none)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.server_args = args.server_args.split()
    counts = [int(c) for c in args.clients.split(",")]
    rounds = {n: max(3, 64 // n) for n in counts}  # 64 first tokens at 1 client, 3 rounds (96) at 32
    lm = charlm.load(args.checkpoint, device="cpu")
    proc, url = start_server(args.checkpoint, args.server_args)
    try:
        rows = load_figures(url, counts, args.tokens, rounds)
        fz = fuzz(url, proc.pid, args.fuzz) if args.fuzz else None
        if fz is not None:
            print(fz, flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    engine = [e for t in args.engine_threads.split(",") if t for e in engine_figures(lm, counts, args.tokens, int(t))]
    text = report(args, lm, rows, engine, fz)
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
