"""charlm.training.memory: the parameter count against real models, the memory a machine has (cgroup limits
included), and the one-line refusals of train, generate and perplexity for jobs that cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from charlm.checkpoint.store import write_inference_checkpoint
from charlm.cli import main
from charlm.data.tokenizers import fit_tokenizer
from charlm.errors import ConfigError
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.runtime import memory as machine
from charlm.sampling import DecodingOptions, generate
from charlm.training import memory
from charlm.training.config import TrainConfig

GiB = 2**30


def one_line_error(result: Result, contains: str) -> str:
    """A refusal: exit 1, no traceback, one error line naming the option (after any tokenizing progress)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == lines[-1:], lines
    assert contains in errors[0]
    return errors[0]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("cutoffs", [None, (8, 20)])
@pytest.mark.parametrize("emb", [12, 24])  # 12: a tied decoder reads a projection of the 24-wide output
def test_parameter_count_equals_the_built_models(cell, tie, cutoffs, emb):
    config = ModelConfig(
        vocab_size=40, cell=cell, num_layers=3, hidden_size=24, emb_size=emb, tie_weights=tie, adaptive_cutoffs=cutoffs
    )
    model = RNNLanguageModel(config)
    assert memory.parameter_count(config) == sum(p.numel() for p in model.parameters())


def test_training_need_counts_adamw_moments_and_sgd_momentum():
    config = ModelConfig(vocab_size=65)
    adamw = memory.training_need(config, 16, 100)
    assert adamw.weights == adamw.gradients == 4 * adamw.parameters
    assert adamw.optimizer == 2 * adamw.weights
    assert memory.training_need(config, 16, 100, "sgd", momentum=0.9).optimizer == adamw.weights
    assert memory.training_need(config, 16, 100, "sgd").optimizer == 0
    assert memory.training_need(config, 32, 100).window == 2 * adamw.window


def test_adaptive_softmax_holds_fewer_scores_than_the_full_one():
    full = ModelConfig(vocab_size=50_000, hidden_size=256, emb_size=256)
    adaptive = ModelConfig(vocab_size=50_000, hidden_size=256, emb_size=256, adaptive_cutoffs=(2000, 10000))
    assert memory.logit_width(adaptive) == 2000 + 2 + 40_000
    assert memory.window_bytes(adaptive, 16, 50) < memory.window_bytes(full, 16, 50)


def test_the_defaults_are_accepted():
    memory.check_training(TrainConfig.from_options(corpus=("x",)), 65, "cpu")  # width still open: autosize's to choose
    memory.check_training(
        TrainConfig.from_options(corpus=("x",), hidden_size=512, batch_size=16, lr=5e-3, dropout=0.0), 65, "cpu"
    )
    resolved = TrainConfig.from_options(
        corpus=("x",), level="word", hidden_size=650, batch_size=16, lr=3e-3, dropout=0.1
    )
    memory.check_training(resolved, 50_000, "cpu")


def test_a_huge_width_is_refused_naming_the_figures_and_hidden():
    with pytest.raises(ConfigError) as exc:
        memory.check_training(TrainConfig.from_options(corpus=("x",), hidden_size=100_000_000), 65, "cpu")
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("training a 2x100000000 LSTM needs about ")
    assert "weights, gradients, AdamW state and one 16x100 window" in message and "--hidden" in message


def test_the_option_that_weighs_most_is_named_first(monkeypatch):
    monkeypatch.setattr(machine, "available_bytes", lambda device="cpu": 1 * GiB)
    with pytest.raises(ConfigError, match=r"use a smaller --batch-size or --bptt"):
        memory.check_training(
            TrainConfig.from_options(corpus=("x",), hidden_size=256, batch_size=4096, bptt=200), 65, "cpu"
        )
    with pytest.raises(ConfigError, match=r"use fewer --eval-streams"):
        memory.check_training(
            TrainConfig.from_options(corpus=("x",), hidden_size=64, eval_streams=10**6, eval_tokens=0), 65, "cpu"
        )
    with pytest.raises(ConfigError, match=r"--max-vocab"):
        memory.check_training(TrainConfig.from_options(corpus=("x",), level="word", hidden_size=2048), 10**6, "cpu")


def test_validation_streams_are_bounded_by_the_tokens_it_scores(monkeypatch):
    monkeypatch.setattr(machine, "available_bytes", lambda device="cpu": 2 * GiB)
    # --eval-tokens 262,144 (the default) scores at most 1,024 warm-up-long segments, whatever --eval-streams says
    memory.check_training(TrainConfig.from_options(corpus=("x",), hidden_size=64, eval_streams=10**6), 65, "cpu")


def test_train_refuses_a_huge_hidden_in_one_line_before_creating_the_directory(tiny_corpus, out_dir):
    result = CliRunner().invoke(main, ["train", str(tiny_corpus), "--out", str(out_dir), "--hidden", "100000000"])
    error = one_line_error(result, "--hidden")
    assert "available here" in error
    assert not out_dir.exists()


def test_train_overwrite_with_a_huge_hidden_leaves_the_previous_run(tiny_corpus, out_dir):
    tok = fit_tokenizer("char", "abc\n")
    write_inference_checkpoint(out_dir, RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=8)), tok)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    args = ["train", str(tiny_corpus), "--out", str(out_dir), "--hidden", "100000000", "--overwrite"]
    one_line_error(CliRunner().invoke(main, args), "--hidden")
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_available_memory_is_positive():
    assert machine.available_bytes("cpu") > 0


def _fake_proc(tmp_path: Path, monkeypatch, cgroup_line: str, mem_available_kb: int = 64 * 2**20) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(f"MemTotal: {2 * mem_available_kb} kB\nMemAvailable: {mem_available_kb} kB\n")
    (proc / "cgroup").write_text(cgroup_line + "\n")
    root = tmp_path / "cgroup"
    root.mkdir()
    monkeypatch.setattr(machine, "PROC_MEMINFO", proc / "meminfo")
    monkeypatch.setattr(machine, "PROC_CGROUP", proc / "cgroup")
    monkeypatch.setattr(machine, "CGROUP_ROOT", root)
    return root


def test_a_cgroup_v2_limit_lowers_the_available_memory(tmp_path, monkeypatch):
    root = _fake_proc(tmp_path, monkeypatch, "0::/job/step")
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "job" / "step").mkdir(parents=True)
    (root / "job" / "memory.max").write_text(f"{4 * GiB}\n")  # the limit sits on the parent
    (root / "job" / "memory.current").write_text(f"{1 * GiB}\n")
    (root / "job" / "memory.stat").write_text(f"anon 1\ninactive_file {GiB // 2}\n")  # cache the kernel can drop
    (root / "job" / "step" / "memory.max").write_text("max\n")
    (root / "job" / "step" / "memory.current").write_text(f"{1 * GiB}\n")
    assert machine.host_available_bytes() == 4 * GiB - GiB + GiB // 2
    assert machine.available_bytes("cpu") == 4 * GiB - GiB + GiB // 2


def test_a_cgroup_v1_limit_lowers_the_available_memory(tmp_path, monkeypatch):
    root = _fake_proc(tmp_path, monkeypatch, "4:memory:/docker/abc")
    group = root / "memory" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text(f"{2 * GiB}\n")
    (group / "memory.usage_in_bytes").write_text(f"{GiB // 4}\n")
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # the root: no limit
    (root / "memory" / "memory.usage_in_bytes").write_text(f"{GiB}\n")
    assert machine.host_available_bytes() == 2 * GiB - GiB // 4


def test_without_a_limit_meminfo_decides_and_without_proc_the_machine_size(tmp_path, monkeypatch):
    _fake_proc(tmp_path, monkeypatch, "0::/", mem_available_kb=3 * 2**20)
    assert machine.host_available_bytes() == 3 * GiB
    monkeypatch.setattr(machine, "PROC_MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(machine, "PROC_CGROUP", tmp_path / "missing")
    assert machine.host_available_bytes() > 0


# ------------------------------------------------------------------ generate and perplexity
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    tok = fit_tokenizer("char", "the cat sat on the mat.\n" * 4)
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, num_layers=1, hidden_size=16, emb_size=8))
    return write_inference_checkpoint(tmp_path_factory.mktemp("mem") / "ckpt", model, tok)


@pytest.fixture
def small_machine(monkeypatch):
    """A machine with 1 GiB free, whatever this one has."""
    monkeypatch.setattr(machine, "available_bytes", lambda device="cpu": 1 * GiB)


def test_generate_refuses_many_long_samples_naming_the_options(ckpt, small_machine):
    result = CliRunner().invoke(main, ["generate", str(ckpt), "-p", "a", "--num-samples", "1024", "-n", "1000000"])
    error = one_line_error(result, "--num-samples")
    assert "drawing 1,024 samples of up to 1,000,000 tokens needs about" in error and "--length" in error


def test_generate_refuses_a_wide_long_beam(ckpt, small_machine):
    args = ["generate", str(ckpt), "-p", "a", "-s", "beam", "--beam-width", "256", "-n", "1000000", "--exact-beam"]
    one_line_error(CliRunner().invoke(main, args), "--beam-width")


def test_streaming_one_long_text_is_not_refused(ckpt, small_machine):
    from charlm.checkpoint.store import load_for_inference
    from charlm.sampling.decode import check_memory

    model, tok, _ = load_for_inference(ckpt)
    check_memory(model, tok.vocab_size, DecodingOptions(max_new_tokens=1_000_000))  # ~150 MB of history
    [result] = generate(model, tok, "a", DecodingOptions(max_new_tokens=5), torch.Generator().manual_seed(0))
    assert result.num_tokens == 5


def test_perplexity_refuses_streams_a_long_file_would_really_use(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "available_bytes", lambda device="cpu": 256 * 2**20)
    text = tmp_path / "long.txt"
    text.write_text("the cat sat on the mat.\n" * 20_000)  # 480 kB: up to 1,875 warm-up-long streams
    result = CliRunner().invoke(main, ["perplexity", str(ckpt), str(text), "--streams", "1000000"])
    error = one_line_error(result, "--streams")
    assert "scoring 1,875 parallel streams needs about" in error


def test_perplexity_takes_huge_streams_on_a_short_file(ckpt, tmp_path, small_machine):
    text = tmp_path / "short.txt"
    text.write_text("the cat sat on the mat.\n" * 40)
    result = CliRunner().invoke(main, ["perplexity", str(ckpt), str(text), "--streams", "1000000", "--json"])
    assert result.exit_code == 0, result.output


def test_perplexity_refuses_a_dynamic_segment_too_long_to_hold(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "available_bytes", lambda device="cpu": 64 * 2**20)
    text = tmp_path / "long.txt"
    text.write_text("the cat sat on the mat.\n" * 20_000)
    args = ["perplexity", str(ckpt), str(text), "--dynamic", "--dynamic-segment", "10000000", "--streams", "1"]
    error = one_line_error(CliRunner().invoke(main, args), "--dynamic-segment")
    assert "segments of 480,000 tokens" in error
