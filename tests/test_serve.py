"""`charlm serve` end to end: a real server on a loopback port, spoken to by the official OpenAI client and by
plain HTTP. Texts must equal what `charlm generate` gives for the same options and seed, also for a request
that joins a batch already decoding; bad requests get OpenAI-shaped 4xx errors and the server goes on serving."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import charlm
from charlm.cli import main

pytest.importorskip("starlette", reason="the serve extra is not installed")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
import charlm.serve as serving  # noqa: E402

TEXT = "the cat sat on the mat.\nthe dog sat on the log.\na cat and a dog met on a mat.\n" * 40
CAPS = dict(max_tokens=4000, max_choices=4, max_prompt_chars=200, max_body_bytes=4096, max_rows=8, max_queue=8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1x32 char LSTM trained for 40 steps (about a second)."""
    root = tmp_path_factory.mktemp("serve")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        charlm.train(
            root / "text.txt", out=root / "tiny", hidden_size=32, emb_size=16, num_layers=1, batch_size=4, bptt=32,
            max_steps=40, eval_interval=20, precision="fp32", device="cpu", baselines=False, sample_length=0, seed=3,
        )  # fmt: skip
    return root / "tiny"


@pytest.fixture(scope="module")
def lm(ckpt: Path) -> charlm.LanguageModel:
    return charlm.load(ckpt, device="cpu")


@pytest.fixture(scope="module")
def server(lm):
    with serving.start({"tiny": lm}, caps=serving.Caps(**CAPS), grace=0.5) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def generate_json(ckpt: Path, *args: str) -> dict:
    result = CliRunner().invoke(main, ["generate", str(ckpt), "--json", "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def post(server, body: dict | bytes, **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + "/v1/completions", content=content, timeout=20, **kw)


def sse(response: httpx.Response) -> list[dict | str]:
    """The events of a stream, [DONE] as the string."""
    out: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# ------------------------------------------------------------------ what clients get
def test_openai_client_gets_the_text_charlm_generate_gives(server, client, ckpt):
    got = client.completions.create(model="tiny", prompt="the cat", max_tokens=60, seed=5, temperature=0.9, top_p=0.95)
    want = generate_json(ckpt, "--prompt", "the cat", "--length", "60", "--seed", "5", "-t", "0.9", "--top-p", "0.95")
    assert got.choices[0].text == want["results"][0]["text"]
    assert got.choices[0].finish_reason == "length" and got.model == "tiny" and got.object == "text_completion"
    assert got.usage.completion_tokens == 60 and got.usage.prompt_tokens == len("the cat") + 1  # the line start
    assert got.model_extra["seed"] == 5


def test_streamed_pieces_join_to_the_whole_text(client, lm):
    whole = client.completions.create(model="tiny", prompt="a dog", max_tokens=80, seed=11)
    chunks = list(
        client.completions.create(
            model="tiny", prompt="a dog", max_tokens=80, seed=11, stream=True, stream_options={"include_usage": True}
        )
    )
    # how many chunks depends on timing (pieces that wait while one is written go out together), what they join
    # to does not
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].text == lm.generate("a dog", max_new_tokens=80, seed=11).text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 80


def test_n_choices_are_the_samples_of_one_seed_and_prompt_lists_are_answered_in_order(client, lm):
    got = client.completions.create(model="tiny", prompt=["the", "a cat"], n=2, max_tokens=30, seed=8)
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    for p, prompt in enumerate(["the", "a cat"]):
        want = lm.generate(prompt, max_new_tokens=30, num_samples=2, seed=8)
        assert [got.choices[p * 2 + i].text for i in range(2)] == [w.text for w in want]


def test_stop_strings_logprobs_and_echo(server, lm):
    body = {"prompt": "the", "max_tokens": 200, "seed": 2, "stop": ["\n"], "logprobs": 2, "echo": True}
    choice = post(server, body).json()["choices"][0]
    want = lm.generate("the", max_new_tokens=200, seed=2, stop="\n")
    assert choice["text"] == "the" + want.text and choice["finish_reason"] == "stop"
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]).startswith(want.text) and len(lp["tokens"]) == len(want[0].ids)
    assert sum(lp["token_logprobs"]) == pytest.approx(want[0].logprob, abs=1e-4)
    assert all(
        len(top) <= 2 and max(top.values()) >= tok - 1e-6 for top, tok in zip(lp["top_logprobs"], lp["token_logprobs"])
    )
    assert lp["text_offset"][0] == 3


def test_beam_search_runs_in_the_worker_and_greedy_needs_no_seed(server, lm):
    got = post(server, {"prompt": "the", "max_tokens": 20, "strategy": "beam", "beam_width": 3, "n": 2}).json()
    want = lm.generate("the", max_new_tokens=20, strategy="beam", beam_width=3, n_best=2)
    assert [c["text"] for c in got["choices"]] == [w.text for w in want]
    greedy = post(server, {"prompt": "the", "max_tokens": 20, "temperature": 0})
    assert greedy.json()["choices"][0]["text"] == lm.generate("the", max_new_tokens=20, strategy="greedy").text
    assert int(greedy.headers["x-charlm-seed"]) == greedy.json()["seed"]  # a fresh seed, reported


def test_a_request_joining_a_running_batch_gets_the_text_it_gets_alone(server, lm):
    body = {"prompt": "the dog", "max_tokens": 4000, "seed": 21, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=20) as long_one:
        lines = long_one.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))  # A is decoding now
        joined = post(server, {"prompt": "a cat", "max_tokens": 50, "seed": 4}).json()
        assert server.state.models["tiny"].worker.load["live_rows"] == 1  # B came and went while A ran
        rest = [line[6:] for line in lines if line.startswith("data: ")]
    assert joined["choices"][0]["text"] == lm.generate("a cat", max_new_tokens=50, seed=4).text
    texts = [json.loads(d)["choices"][0]["text"] for d in [first[6:], *rest[:-1]]]
    assert "".join(texts) == lm.generate("the dog", max_new_tokens=4000, seed=21).text and rest[-1] == "[DONE]"


def test_a_client_that_goes_away_frees_its_rows_at_once(server):
    worker = server.state.models["tiny"].worker
    body = {"prompt": "the", "max_tokens": 4000, "n": 3, "seed": 1, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=20) as r:
        next(line for line in r.iter_lines() if line.startswith("data: "))
        assert worker.load["live_rows"] == 3
    deadline = time.monotonic() + 5
    while worker.load["live_rows"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.load["live_rows"] == 0


# ------------------------------------------------------------------ bad input
BAD = [
    (b"{", 400, None),
    (b"[1, 2]", 400, None),
    (b"\xff\xfe", 400, None),
    (b"[" * 4000, 400, None),
    ({"prompt": 3}, 400, "prompt"),
    ({"prompt": [1, 2, 3]}, 400, "prompt"),
    ({"prompt": []}, 400, "prompt"),
    ({"promt": "x"}, 400, "promt"),
    ({"model": "nope"}, 404, "model"),
    ({"model": ["tiny"]}, 400, "model"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"max_tokens": "9"}, 400, "max_tokens"),
    ({"temperature": -1}, 400, "temperature"),
    ({"temperature": "hot"}, 400, "temperature"),
    ({"top_p": 1.5}, 400, "top_p"),
    ({"top_k": 10_000}, 400, "top_k"),
    ({"presence_penalty": 3}, 400, "presence_penalty"),
    ({"n": 0}, 400, "n"),
    ({"n": True}, 400, "n"),
    ({"seed": -1}, 400, "seed"),
    ({"stop": [""]}, 400, "stop"),
    ({"stop": ["x"] * 50}, 400, "stop"),
    ({"stream": "yes"}, 400, "stream"),
    ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"logprobs": 99}, 400, "logprobs"),
    ({"suffix": "end"}, 400, "suffix"),
    ({"logit_bias": {"5": 10}}, 400, "logit_bias"),
    ({"strategy": "beam", "stream": True}, 400, "stream"),
    ({"strategy": "wild"}, 400, "strategy"),
    ({"min_p": 0.1, "temperature": 0}, 400, "min_p"),
]


@pytest.mark.parametrize("body,status,param", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_openai_shaped_4xx_and_the_server_goes_on(server, body, status, param):
    r = post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    assert err["message"] and "\n" not in err["message"] and "Traceback" not in err["message"]
    assert post(server, {"prompt": "the", "max_tokens": 3}).status_code == 200


def test_caps_refuse_what_would_hold_the_server(server, client):
    assert post(server, {"max_tokens": 4001}).json()["error"]["param"] == "max_tokens"
    assert post(server, {"prompt": ["a", "b", "c"], "n": 2}).json()["error"]["param"] == "n"
    assert post(server, {"prompt": "x" * 201}).json()["error"]["code"] == "context_length_exceeded"
    big = post(server, {"prompt": "x" * 5000})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="x", max_tokens=10_000)


def test_a_full_queue_is_a_429(lm):
    from charlm.serve.errors import APIError
    from charlm.serve.scheduler import Job, ModelWorker
    from charlm.serve.schemas import parse_completion

    caps = serving.Caps(max_queue=2, max_rows=4, max_choices=4)
    worker = ModelWorker("tiny", lm, caps)  # not started: nothing leaves the queue
    loop = __import__("asyncio").new_event_loop()
    req = parse_completion({"prompt": "x"}, lm, caps)
    worker.submit(Job(req, loop))
    worker.submit(Job(req, loop))
    with pytest.raises(APIError) as err:
        worker.submit(Job(req, loop))
    assert err.value.status == 429 and err.value.body()["error"]["type"] == "rate_limit_error"
    loop.close()


def test_routes_models_health_and_no_chat(server, client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    card = httpx.get(server.url + "/v1/models/tiny").json()
    assert card["charlm"]["level"] == "char" and card["charlm"]["step"] == 40 and card["charlm"]["hidden"] == 32
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    chat = httpx.post(server.url + "/v1/chat/completions", json={"messages": []})
    assert chat.status_code == 404 and "/v1/completions" in chat.json()["error"]["message"]
    assert httpx.get(server.url + "/v2/nothing").status_code == 404
    assert httpx.get(server.url + "/v1/completions").status_code == 405
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and 'id="generate"' in page.text
    assert "http" not in httpx.get(server.url + "/static/app.js").text  # nothing fetched from elsewhere


# ------------------------------------------------------------------ the key
def test_an_api_key_is_required_on_every_api_route(lm, monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    with serving.start({"tiny": lm}, api_key="s3cret") as running:
        url = running.url
        for path, method in (("/v1/completions", "POST"), ("/v1/models", "GET"), ("/v1/models/tiny", "GET")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                r = httpx.request(method, url + path, json={"prompt": "x"}, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
                assert r.headers["www-authenticate"] == "Bearer"
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="the", max_tokens=5).choices[0].text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="s3cre", max_retries=0).models.list()
        assert httpx.get(url + "/health").status_code == 200 and httpx.get(url + "/").status_code == 200
    assert calls  # compared in constant time


# ------------------------------------------------------------------ the command
def test_charlm_serve_runs_until_sigterm_and_stops_cleanly(ckpt):
    env = dict(os.environ, CHARLM_API_KEY="k", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "charlm",
        "serve",
        str(ckpt),
        "--port",
        "0",
        "--device",
        "cpu",
        "-q",
        "--max-rows",
        "16",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("serving at" in line for line in lines) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        found = re.search(r"serving at (\S+)", "".join(lines))
        assert found, (lines, proc.poll())
        url = found.group(1)
        out = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0).completions.create(
            model="tiny", prompt="the", max_tokens=10, seed=1
        )
        assert len(out.choices[0].text) > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    reader.join(5)
    text = "".join(lines)
    assert "caps: body 1,048,576 bytes" in text and "an API key is required" in text and "stopped" in text
    assert "Traceback" not in text


def test_without_the_extra_the_command_names_it(ckpt, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    result = CliRunner().invoke(main, ["serve", str(ckpt)])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == 'Error: serving needs uvicorn, which is not installed; run: pip install "charlm[serve]"'
    )


def test_a_stopping_server_ends_open_streams(lm):
    running = serving.start({"tiny": lm}, grace=0.0)
    body = {"prompt": "the", "max_tokens": 4096, "seed": 1, "stream": True}
    with httpx.stream("POST", running.url + "/v1/completions", json=body, timeout=20) as r:
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        events = [line for line in lines if line.startswith("data: ")]
    stopper.join(10)
    assert not stopper.is_alive()
    assert json.loads(events[-1][6:])["error"]["code"] == "shutdown"
