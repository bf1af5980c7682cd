"""`charlm generate` through click's CliRunner, on tiny checkpoints written in tmp_path:
one-shot output (streamed, n-best, JSON), every bad input, and the REPL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import charlm
import charlm.cli.generate_cmd as generate_cmd
import charlm.cli.repl as repl_mod
from charlm.api import LanguageModel
from charlm.checkpoint.store import load_for_inference, write_inference_checkpoint
from charlm.cli import main
from charlm.data.tokenizers import fit_tokenizer
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.sampling import DecodingOptions, generate

TEXT = "ROMEO: the cat sat on the mat.\nJULIET: the dog sat on the log.\n" * 4


def _model(vocab: int, seed: int) -> RNNLanguageModel:
    torch.manual_seed(seed)
    model = RNNLanguageModel(ModelConfig(vocab_size=vocab, num_layers=1, hidden_size=16, emb_size=8))
    with torch.no_grad():
        model.decoder.weight.mul_(20.0)  # clear argmax winners, varied samples
    return model


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory) -> Path:
    tok = fit_tokenizer("char", TEXT)
    return write_inference_checkpoint(tmp_path_factory.mktemp("char") / "ckpt", _model(tok.vocab_size, 0), tok)


@pytest.fixture(scope="module")
def word_ckpt(tmp_path_factory) -> Path:
    tok = fit_tokenizer("word", TEXT)
    model = _model(tok.vocab_size, 1)
    with torch.no_grad():
        model.decoder.bias[tok.eos_id] += 1.0  # line ends come often
    return write_inference_checkpoint(tmp_path_factory.mktemp("word") / "ckpt", model, tok)


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, ["generate", *map(str, args)], input=input)


def ok(*args: str, input: str | None = None):
    result = run(*args, input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def library(ckpt: Path, prompt: str, options: DecodingOptions, seed: int | None = None):
    model, tok, _ = load_for_inference(ckpt)
    return generate(model, tok, prompt, options, seed)  # an int seed: the text `--seed` gives


# ------------------------------------------------------------------ one-shot
def test_greedy_prints_the_prompt_then_the_continuation(char_ckpt):
    result = ok(char_ckpt, "--prompt", "ROMEO:", "--length", "30", "--strategy", "greedy")
    [expected] = library(char_ckpt, "ROMEO:", DecodingOptions(strategy="greedy", max_new_tokens=30))
    out = "ROMEO:" + expected.text
    assert result.stdout == (out if out.endswith("\n") else out + "\n")
    assert "30 tokens" in result.stderr


def test_sampling_is_reproducible_with_a_seed(char_ckpt):
    a = ok(char_ckpt, "-p", "the", "-n", "40", "--seed", "3", "--temperature", "1.5")
    b = ok(char_ckpt, "-p", "the", "-n", "40", "--seed", "3", "--temperature", "1.5")
    c = ok(char_ckpt, "-p", "the", "-n", "40", "--seed", "4", "--temperature", "1.5")
    assert a.stdout == b.stdout != c.stdout
    assert a.stdout.startswith("the")
    [expected] = library(char_ckpt, "the", DecodingOptions(max_new_tokens=40, temperature=1.5), seed=3)
    assert a.stdout.rstrip("\n") == ("the" + expected.text).rstrip("\n")
    assert "seed 3" in a.stderr


def test_unseeded_runs_report_the_seed_they_used(char_ckpt):
    a = ok(char_ckpt, "-p", "the", "-n", "30", "--temperature", "2")
    seed = a.stderr.split("seed ")[1].split()[0]
    b = ok(char_ckpt, "-p", "the", "-n", "30", "--temperature", "2", "--seed", seed)
    assert a.stdout == b.stdout


def test_json_prints_only_json(char_ckpt):
    result = ok(char_ckpt, "-p", "the", "-n", "12", "-N", "3", "--seed", "1", "--json")
    data = json.loads(result.stdout)  # nothing else on stdout
    assert data["seed"] == 1 and data["prompt"] == "the" and data["strategy"] == "sample"
    assert len(data["results"]) == 3
    expected = library(char_ckpt, "the", DecodingOptions(max_new_tokens=12, num_samples=3), seed=1)
    for r, e in zip(data["results"], expected):
        assert r["text"] == e.text and r["tokens"] == 12 and r["logprob"] == pytest.approx(e.logprob)
        assert r["finish_reason"] == "length"


def test_several_samples_print_one_block_each(char_ckpt):
    result = ok(char_ckpt, "-p", "the", "-n", "10", "-N", "3", "--seed", "2")
    assert [line.split()[:2] for line in result.stdout.splitlines() if line.startswith("sample ")] == [
        ["sample", "1"],
        ["sample", "2"],
        ["sample", "3"],
    ]
    assert result.stdout.count("\nthe") + result.stdout.startswith("the") == 3


def test_beam_prints_the_n_best_list_with_scores(char_ckpt):
    result = ok(
        char_ckpt,
        "-p",
        "the ",
        "-n",
        "10",
        "--strategy",
        "beam",
        "--beam-width",
        "4",
        "--n-best",
        "3",
        "--length-penalty",
        "0.5",
    )
    heads = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert [h.split()[0] for h in heads] == ["#1", "#2", "#3"]
    scores = [float(h.split("score ")[1].split()[0]) for h in heads]
    assert scores == sorted(scores, reverse=True)
    expected = library(
        char_ckpt,
        "the ",
        DecodingOptions(strategy="beam", beam_width=4, n_best=3, max_new_tokens=10, length_penalty=0.5),
    )
    assert scores == pytest.approx([round(e.score, 4) for e in expected], abs=1e-4)
    data = json.loads(
        ok(
            char_ckpt,
            "-p",
            "the ",
            "-n",
            "10",
            "-s",
            "beam",
            "-b",
            "4",
            "--n-best",
            "3",
            "--length-penalty",
            "0.5",
            "--json",
        ).stdout
    )
    assert [r["text"] for r in data["results"]] == [e.text for e in expected]
    assert all("score" in r for r in data["results"])


def test_stop_string_with_an_escape(char_ckpt):
    data = json.loads(
        ok(
            char_ckpt,
            "-p",
            "ROMEO:",
            "-n",
            "200",
            "-N",
            "4",
            "--seed",
            "0",
            "--temperature",
            "1.3",
            "--stop",
            r"\n",
            "--json",
        ).stdout
    )
    assert data["options"]["stop"] == ["\n"]
    assert all("\n" not in r["text"] for r in data["results"])
    assert any(r["finish_reason"] == "stop" for r in data["results"])


def test_word_model_stops_after_n_lines(word_ckpt):
    data = json.loads(
        ok(word_ckpt, "-p", "the cat", "-n", "200", "-N", "8", "--seed", "0", "--lines", "2", "--json").stdout
    )
    for r in data["results"]:
        assert r["finish_reason"] == "eos" and r["text"].count("\n") == 2 and r["text"].endswith("\n")
    assert any(r["tokens"] > 4 for r in data["results"])  # lines with words in them
    one = json.loads(ok(word_ckpt, "-p", "the cat", "-n", "200", "--seed", "0", "--json").stdout)["results"][0]
    assert one["text"].count("\n") == 1  # <eos> ends a word model's text after one line by default


def test_prompt_outside_the_vocabulary_warns_and_names_the_units(char_ckpt, word_ckpt):
    result = ok(char_ckpt, "-p", "ROMEO: ¿qué?", "-n", "5", "--seed", "0")
    assert (
        "warning:" in result.stderr and "'¿'" in result.stderr and "'é'" in result.stderr and "<unk>" in result.stderr
    )
    assert result.stdout.startswith("ROMEO: ¿qué?")
    result = ok(word_ckpt, "-p", "the zebra sat", "-n", "5", "--seed", "0")
    assert "1 word" in result.stderr and "'zebra'" in result.stderr


def test_options_the_strategy_ignores_are_reported(char_ckpt):
    result = ok(char_ckpt, "-p", "a", "-n", "3", "-s", "beam", "-b", "2", "--top-k", "3")
    assert "--top-k does not apply to beam" in result.stderr


# ------------------------------------------------------------------ bad input
def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--temperature", "-1"], 2, "temperature"),
        (["--temperature", "nan"], 1, "temperature"),
        (["--top-k", "0"], 2, "top-k"),
        (["--top-k", "1000"], 1, "above the vocabulary"),
        (["--top-p", "0"], 2, "top-p"),
        (["--top-p", "1.5"], 2, "top-p"),
        (["--beam-width", "0"], 2, "beam-width"),
        (["--length", "0"], 2, "length"),
        (["--length-penalty", "-1"], 2, "length-penalty"),
        (["--num-samples", "3", "--strategy", "greedy"], 1, "needs sampling"),
        (["--strategy", "beam", "--beam-width", "2", "--n-best", "3"], 1, "n-best"),
        (["--json", "--interactive"], 1, "do not combine"),
        (["--device", "tpu9"], 1, "device"),
        (["--strategy", "nucleus"], 2, "strategy"),
        (["--stop", ""], 1, "stop"),
    ],
)
def test_bad_options_give_one_line_errors(char_ckpt, args, code, words):
    line = _one_line_error(run(char_ckpt, "-p", "a", *args), code)
    assert words in line


def test_missing_checkpoint(tmp_path):
    line = _one_line_error(run(tmp_path / "nope", "-p", "a"), 2)
    assert "does not exist" in line


def test_directory_that_is_not_a_checkpoint(tmp_path):
    line = _one_line_error(run(tmp_path, "-p", "a"), 1)
    assert "not a charlm checkpoint" in line


@pytest.mark.parametrize("damage", ["description", "weights", "tokenizer"])
def test_corrupt_checkpoint(char_ckpt, tmp_path, damage):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(char_ckpt, ckpt)
    target = {"description": "checkpoint.json", "weights": "best.safetensors", "tokenizer": "tokenizer.json"}[damage]
    (ckpt / target).write_bytes(b"\x00garbage{")
    line = _one_line_error(run(ckpt, "-p", "a", "-n", "3"), 1)
    assert str(ckpt) in line or target in line


def test_damaged_weights_are_refused_in_one_line_and_no_verify_loads_them(char_ckpt, tmp_path):
    import shutil

    from charlm.checkpoint.store import BEST

    ckpt = tmp_path / "ckpt"
    shutil.copytree(char_ckpt, ckpt)
    data = bytearray((ckpt / BEST).read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # the tensors follow the header's length and the header
    mid = (start + len(data)) // 2
    data[mid] ^= 0xFF
    data[mid + 1] ^= 0xFF
    (ckpt / BEST).write_bytes(bytes(data))
    line = _one_line_error(run(ckpt, "--prompt", "a", "--length", "5"), 1)
    assert f"{ckpt / BEST} is damaged" in line and "--no-verify" in line
    assert run(ckpt, "--prompt", "a", "--length", "5").stdout == ""
    ok(ckpt, "--prompt", "a", "--length", "5", "--no-verify")


# ------------------------------------------------------------------ the REPL
def _settings_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("strategy ")]


def test_repl_reads_prompts_and_settings_from_piped_input(char_ckpt):
    [expected] = library(char_ckpt, "the", DecodingOptions(strategy="greedy", max_new_tokens=15))
    result = ok(char_ckpt, "--interactive", "-n", "50", input="/temperature 0\n/length 15\nthe\n/quit\nnever read\n")
    assert result.stdout.rstrip("\n") == expected.text.rstrip("\n")
    settings = _settings_lines(result.stderr)
    assert "strategy sample" in settings[0] and "length 50" in settings[0]  # shown at the start
    assert settings[1].startswith("strategy greedy")  # temperature 0 is greedy
    assert "length 15" in settings[2]
    assert "never read" not in result.output


def test_repl_settings_commands(char_ckpt):
    commands = [
        "/temperature 0.7",
        "/top-k 20",
        "/top-p 0.9",
        "/samples 2",
        "/beam 3",
        "/length-penalty 0.6",
        "/n-best 2",
        "/length 300",
        "/stop \\n",
        "/lines 2",
        "/seed 1",
        "/top-k off",
        "/settings",
        "/reset",
        "/help",
    ]
    result = ok(char_ckpt, "-i", "-n", "20", "--seed", "9", input="\n".join(commands) + "\n")
    s = _settings_lines(result.stderr)
    assert len(s) == 1 + len(commands) - 1  # the start, then one per command except /help
    assert "temperature 0.7" in s[1] and "top-k 20" in s[2] and "top-p 0.9" in s[3] and "samples 2" in s[4]
    assert s[5].startswith("strategy beam") and "beam width 3" in s[5]
    assert "length-penalty 0.6" in s[6] and "n-best 2" in s[7] and "length 300" in s[8]
    assert "stop '\\n'" in s[9] and "lines 2" in s[10] and "seed 1" in s[11]
    assert s[13] == s[12]  # /settings shows what is set
    assert s[14] == s[0] and "seed 9" in s[14]  # /reset: back to the start
    assert "/temperature T" in result.stderr  # /help


def test_repl_same_seed_same_text(char_ckpt):
    # with a line end as stop string, each continuation is exactly one line of stdout
    result = ok(
        char_ckpt, "-i", "-n", "25", "--temperature", "1.5", input="/stop \\n\n/seed 5\nthe\n/seed 5\nthe\nthe\n"
    )
    first, second, third = result.stdout.splitlines()
    assert first == second != third
    [expected] = library(char_ckpt, "the", DecodingOptions(max_new_tokens=25, temperature=1.5, stop=("\n",)), seed=5)
    assert first == expected.text


def test_repl_bad_settings_are_reported_and_the_session_goes_on(char_ckpt):
    bad = [
        "/temperature -1",
        "/temperature abc",
        "/top-k 0",
        "/top-k 1000",
        "/top-p 2",
        "/beam 0",
        "/length 0",
        "/length",
        "/bogus",
        "/samples 0",
    ]
    result = ok(char_ckpt, "-i", "-n", "5", "--seed", "1", input="\n".join(bad) + "\n/temperature 0\nthe\n")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)
    assert "unknown command /bogus" in errors[8] and "above the vocabulary" in errors[3] and "not a number" in errors[1]
    [expected] = library(char_ckpt, "the", DecodingOptions(strategy="greedy", max_new_tokens=5))
    assert result.stdout.rstrip("\n") == expected.text.rstrip("\n")  # settings stayed valid, generation works


def test_repl_beam_prints_the_n_best(char_ckpt):
    result = ok(char_ckpt, "-i", "-n", "6", input="/beam 3\n/n-best 2\nthe\n")
    assert [line.split()[0] for line in result.stdout.splitlines() if line.startswith("#")] == ["#1", "#2"]


def test_repl_ends_at_end_of_input_and_accepts_slash_prompts(char_ckpt):
    result = ok(char_ckpt, "-i", "-n", "4", "--temperature", "0", input="//x\n\n")
    [expected] = library(char_ckpt, "/x", DecodingOptions(strategy="greedy", max_new_tokens=4))
    assert result.stdout.rstrip("\n") == expected.text.rstrip("\n")
    assert ok(char_ckpt, "-i", input="").stdout == ""


class _Interrupted:
    """A stream that yields `pieces` pieces of the real one, then raises KeyboardInterrupt (Ctrl-C while printing)."""

    def __init__(self, real, pieces: int) -> None:
        self._real, self._pieces = real, pieces
        self.warning, self.result, self.closed = real.warning, None, False

    def __iter__(self):
        inner = iter(self._real)
        for _ in range(self._pieces):
            yield next(inner)
        raise KeyboardInterrupt

    def close(self) -> None:
        self.closed = True
        self._real.close()


def test_repl_ctrl_c_stops_the_continuation_not_the_session(char_ckpt, monkeypatch, tmp_path):
    real_step = repl_mod.DecodeBatch.step
    calls = []

    def interrupted(self):
        calls.append(self)
        if len(calls) == 3:  # the first continuation is interrupted after two tokens
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(repl_mod.DecodeBatch, "step", interrupted)
    saved = tmp_path / "session.txt"
    result = ok(char_ckpt, "-i", "-n", "8", "--temperature", "0", input=f"the\nthe\n/save {saved}\n")
    assert "[stopped]" in result.stderr
    [expected] = library(char_ckpt, "the", DecodingOptions(strategy="greedy", max_new_tokens=8))
    assert result.stdout.split("\n")[0] == expected.text[:2]
    assert expected.text.rstrip("\n") in result.stdout  # the second prompt ran in full
    # what was printed of the stopped text stays in the session's text
    assert saved.read_text(encoding="utf-8") == f"the{expected.text[:2]}\nthe{expected.text}" + (
        "" if expected.text.endswith("\n") else "\n"
    )


def test_repl_ctrl_c_at_the_prompt_keeps_the_session(char_ckpt):
    lines = iter([KeyboardInterrupt(), "/length 3", "/quit", "not reached"])

    def read(_prompt: str) -> str:
        item = next(lines)
        if isinstance(item, BaseException):
            raise item
        return item

    repl = repl_mod.Repl(charlm.load(char_ckpt, device="cpu"), DecodingOptions(max_new_tokens=9), 0)
    repl.run(read=read)
    assert repl.options.max_new_tokens == 3  # the line after Ctrl-C was read
    assert next(lines) == "not reached"


def test_ctrl_c_in_one_shot_keeps_the_text_so_far(char_ckpt, monkeypatch):
    real_stream = LanguageModel.stream
    made = []

    def interrupted(self, *args, **kwargs):
        made.append(_Interrupted(real_stream(self, *args, **kwargs), 1))
        return made[-1]

    monkeypatch.setattr(LanguageModel, "stream", interrupted)
    result = run(char_ckpt, "-p", "the", "-n", "50", "--temperature", "0")
    assert result.exit_code == 130
    [expected] = library(char_ckpt, "the", DecodingOptions(strategy="greedy", max_new_tokens=50))
    assert result.stdout == "the" + expected.text[:1] + "\n"
    assert "[stopped]" in result.stderr and "Traceback" not in result.output
    assert made[0].closed


def test_device_and_weights_choice(char_ckpt):
    assert generate_cmd.resolve_device("auto").type in ("cpu", "cuda")
    ok(char_ckpt, "-p", "a", "-n", "3", "--device", "auto", "--which", "best")
    line = _one_line_error(run(char_ckpt, "-p", "a", "-n", "3", "--which", "last"), 1)
    assert "last.safetensors" in line


def test_seeds_and_sizes_out_of_range_are_usage_errors(char_ckpt):
    for args in (
        ["--seed", str(2**64)],
        ["--seed", "-1"],
        ["--length", str(10**7)],
        ["--num-samples", "100000"],
        ["--beam-width", "100000"],
    ):
        result = run(char_ckpt, "-p", "a", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, args
        assert args[0] in result.output


def test_repl_refuses_a_huge_seed_and_keeps_the_old_one(char_ckpt):
    result = ok(char_ckpt, "-i", "--seed", "5", input=f"/seed {2**64}\n/settings\n")
    assert "seed must be between 0 and" in result.stderr
    assert result.stderr.count("seed 5") >= 2  # the settings before and after the refused /seed


def test_json_says_unk_is_masked_and_allow_unk_turns_it_off(char_ckpt):
    payload = json.loads(ok(char_ckpt, "-p", "the", "-n", "5", "--seed", "1", "--json").stdout)
    assert payload["unk_masked"] is True and payload["options"]["allow_unk"] is False
    payload = json.loads(ok(char_ckpt, "-p", "the", "-n", "5", "--seed", "1", "--json", "--allow-unk").stdout)
    assert payload["unk_masked"] is False


# ------------------------------------------------------------------ --prompt-file
FIXTURE_CHAR = Path(__file__).parent / "fixtures" / "v1" / "char"


def _json_generate(*args: str, input: str | None = None) -> dict:
    result = CliRunner().invoke(
        main, ["generate", str(FIXTURE_CHAR), "--length", "30", "--seed", "4", "--json", *args], input=input
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_prompt_file_and_stdin_continue_the_same_text_as_prompt(tmp_path: Path) -> None:
    """A long prompt from a file (read as it is, two lines here) or from standard input gives the text that
    the same prompt typed with --prompt gives (where \\n is an escape)."""
    path = tmp_path / "opening.txt"
    path.write_text("First Citizen:\nBefore we proceed", encoding="utf-8")
    typed = _json_generate("--prompt", r"First Citizen:\nBefore we proceed")
    from_file = _json_generate("--prompt-file", str(path))
    from_stdin = _json_generate("--prompt-file", "-", input="First Citizen:\nBefore we proceed")
    assert from_file["results"] == typed["results"] == from_stdin["results"]
    assert from_file["prompt"] == "First Citizen:\nBefore we proceed"


def test_prompt_file_bad_input_is_one_line(tmp_path: Path) -> None:
    both = CliRunner().invoke(main, ["generate", str(FIXTURE_CHAR), "-p", "x", "--prompt-file", "-"], input="y")
    assert both.exit_code != 0 and "--prompt and --prompt-file do not combine" in both.output
    binary = tmp_path / "image.bin"
    binary.write_bytes(b"\x89PNG\x00\x00")
    result = CliRunner().invoke(main, ["generate", str(FIXTURE_CHAR), "--prompt-file", str(binary)])
    assert result.exit_code == 1 and "looks binary" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_repl_continue_carries_the_state_of_the_last_text(char_ckpt, tmp_path):
    saved = tmp_path / "s.txt"
    result = ok(char_ckpt, "-i", "-n", "15", "--seed", "4", input=f"/seed 4\nROMEO:\n/continue\n/save {saved}\n")
    lm = charlm.load(char_ckpt, device="cpu")
    first = lm.generate("ROMEO:", max_new_tokens=15, seed=4).text
    # /continue draws from the session's next seed, going on from the state after "ROMEO:" + first
    then = lm.generate("ROMEO:" + first, max_new_tokens=15, seed=repl_mod.derived_seed(4, 1)).text
    assert saved.read_text(encoding="utf-8").rstrip("\n") == ("ROMEO:" + first + then).rstrip("\n")
    assert first in result.stdout and then.rstrip("\n") in result.stdout


def test_repl_continue_after_beam_reads_the_text_again(char_ckpt):
    result = ok(char_ckpt, "-i", "-n", "6", input="/beam 2\nthe\n/continue\n")
    assert result.stdout.count("#1") == 2 and "error" not in result.stderr


def test_repl_score_save_and_their_errors(char_ckpt, tmp_path):
    saved = tmp_path / "s.txt"
    saved.write_text("keep me", encoding="utf-8")
    result = ok(char_ckpt, "-i", input=f"/continue\n/save {saved}\n/score the cat\nab\n/save {saved}\n/score\n")
    lm = charlm.load(char_ckpt, device="cpu")
    s = lm.score("the cat")
    assert f"log-prob {s.logprob:.3f} · {len(s.logprobs)} tokens" in result.stderr
    assert "nothing to continue yet" in result.stderr and "nothing to save yet" in result.stderr
    assert f"{saved} exists" in result.stderr and saved.read_text(encoding="utf-8") == "keep me"  # nothing lost
    assert "/score needs a value" in result.stderr


def test_repl_multi_line_entries(char_ckpt):
    calls = []
    original = repl_mod.Repl._generate

    def spy(self, prompt, start):
        calls.append(prompt)
        return original(self, prompt, start)

    lines = iter(["first \\", "second", '"""', "a", "b", '"""', "/quit"])
    repl = repl_mod.Repl(charlm.load(char_ckpt, device="cpu"), DecodingOptions(max_new_tokens=3), 0)
    repl._generate = spy.__get__(repl)  # type: ignore[method-assign]
    repl.run(read=lambda _p: next(lines))
    assert calls == ["first \nsecond", "a\nb"]


def test_repl_history_file_is_kept_across_sessions(tmp_path, monkeypatch):
    readline = pytest.importorskip("readline")
    path = tmp_path / "state" / "history"
    monkeypatch.setenv("CHARLM_HISTORY", str(path))
    readline.clear_history()
    first = repl_mod.LineHistory.open()
    assert first is not None and first.path == path
    readline.add_history("ROMEO:")
    first.save()
    readline.clear_history()
    second = repl_mod.LineHistory.open()
    assert second is not None and readline.get_history_item(readline.get_current_history_length()) == "ROMEO:"
