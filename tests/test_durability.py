"""Nothing lost: a kill at any write, --overwrite, signals, full disks, and the resume rules.

The crash tests fork a child that runs a real training run and dies with
`os._exit` (no cleanup, no finally, as under kill -9) just before its n-th
file-system operation, for every n; the parent then checks that the directory
is one whole run that loads, evaluates and resumes, and that `best` is never
worse than the best validation recorded. A loop of real `kill -9`s against the
CLI is in benchmarks/kill_loop.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charlm.checkpoint import store as ckpt
from charlm.cli import main
from charlm.errors import ConfigError, StorageError
from charlm.evaluation.scoring import evaluate_text
from charlm.runtime.devices import cpu_bf16_supported, resolve_precision
from charlm.training import TrainConfig, loop, prepare, train

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the crash tests fork")

TINY = ["--hidden", "16", "--emb", "8", "--layers", "1", "--batch-size", "4", "--bptt", "16"]


def config(corpus: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        corpus=(str(corpus),),
        out=str(out),
        hidden_size=12,
        emb_size=6,
        num_layers=1,
        batch_size=4,
        bptt=16,
        max_steps=4,
        eval_interval=2,
        log_interval=2,
        eval_streams=2,
        device="cpu",
        seed=3,
    )
    return TrainConfig.from_options(**(base | kw))


def invoke(*args) -> object:
    return CliRunner().invoke(main, ["train", *map(str, args)])


def one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert lines[-1].startswith("Error: ")
    return lines[-1]


# ---------------------------------------------------------------- kill at every write
FILE_OPS = [(os, "replace"), (os, "rename"), (os, "fsync"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree")]


def _run_killed_at(n: int, cfg: TrainConfig, **train_kw) -> tuple[bool, int]:
    """Run `train(cfg)` in a forked child that dies just before its n-th file operation.

    Returns (killed, operations seen); n = 0 counts the operations of a whole run.
    """
    # fork is safe only while torch's OpenMP pool has one thread (conftest sets it); a forked
    # child of a process with a live multi-thread pool can deadlock in its first parallel region.
    assert torch.get_num_threads() == 1, "the crash tests need torch.set_num_threads(1) (tests/conftest.py)"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 3
        try:
            os.close(read)
            seen = [0]
            for mod, name in FILE_OPS:
                real = getattr(mod, name)

                def op(*a, _real=real, **k):
                    seen[0] += 1
                    if seen[0] == n:
                        os._exit(137)  # as kill -9: no cleanup runs
                    return _real(*a, **k)

                setattr(mod, name, op)
            train(cfg, **train_kw)
            os.write(write, str(seen[0]).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    count = os.read(read, 64).decode()
    os.close(read)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 137), f"the child failed with exit code {code} (killed at op {n})"
    return code == 137, int(count or 0)


def _assert_one_whole_run(out: Path, corpus: Path, run_ids: set[str]) -> str:
    """The directory loads (best and last), is one run of `run_ids`, and scores text; returns its run id."""
    model, tok, info = ckpt.load_for_inference(out, "best")
    assert info.run_id in run_ids
    ckpt.load_for_inference(out, "last")
    score = evaluate_text(model, tok, corpus.read_text(encoding="utf-8")[:400], exact=True)
    assert math.isfinite(score.loss)
    return info.run_id


def _assert_best_is_the_best_recorded(out: Path) -> None:
    recorded = [r["valid_loss"] for r in ckpt.read_metrics(out) if r["type"] == "valid"]
    meta = ckpt.weights_metadata(out, "best")
    assert meta is not None and recorded
    assert meta["valid_loss"] == pytest.approx(min(recorded), rel=1e-9)


@pytest.mark.parametrize("overwrite", [False, True], ids=["new run", "overwrite"])
def test_a_kill_at_any_write_leaves_one_whole_run_that_resumes(tiny_corpus, tmp_path, overwrite):
    out = tmp_path / "run"
    old_id = None
    if overwrite:
        train(config(tiny_corpus, out, max_steps=2, hidden_size=8))
        old_id = ckpt.open_checkpoint(out).run_id
    pristine = tmp_path / "pristine"
    if out.exists():
        shutil.copytree(out, pristine)
    new = config(tiny_corpus, out, max_steps=4)
    killed, total = _run_killed_at(0, new, overwrite=overwrite)  # a whole run, to count its operations
    assert not killed and total > 20
    for n in range(1, total + 1):
        shutil.rmtree(out)
        if overwrite:
            shutil.copytree(pristine, out)
        killed, _ = _run_killed_at(n, new, overwrite=overwrite)
        assert killed
        if not ckpt.holds_run(out):  # killed before the new run's first save: nothing to load, nothing lost
            assert not overwrite
            assert train(new).step == 4  # and a plain re-run works, no --overwrite needed
            continue
        run_id = _assert_one_whole_run(out, tiny_corpus, {old_id} | {ckpt.open_checkpoint(out).run_id} - {None})
        if overwrite and run_id == old_id:  # the swap never committed: the old run, untouched
            assert ckpt.open_checkpoint(out).model_config.hidden_size == 8
            train(new, overwrite=True)
        else:
            r = train(config(tiny_corpus, out, max_steps=6), resume=True)
            assert r.step == 6
        _assert_best_is_the_best_recorded(out)
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name in (".staging", ".swap.json")]


def test_a_kill_between_best_and_last_never_lets_a_worse_model_overwrite_best(tiny_corpus, tmp_path, monkeypatch):
    """best written at step N, last still at N-1: the resumed run compares with best's own loss."""
    out = tmp_path / "run"
    losses = iter([3.0, 2.0, 2.5, 2.4, 2.3])
    from charlm.evaluation.scoring import TextScore

    monkeypatch.setattr(prepare, "evaluate_ids", lambda *a, **k: TextScore(100, next(losses) * 100, 100, 100, 0))
    monkeypatch.setattr(loop.Loop, "measure_baselines", lambda self: None)  # they score the same way
    train(config(tiny_corpus, out, max_steps=2, eval_interval=2))  # best 3.0 at step 2
    real_save = ckpt.save_training_state
    monkeypatch.setattr(ckpt, "save_training_state", lambda *a, **k: (_ for _ in ()).throw(StorageError("killed")))
    with pytest.raises(StorageError):
        train(
            config(tiny_corpus, out, max_steps=4, eval_interval=2), resume=True
        )  # best 2.0 at step 4, last stays at 2
    monkeypatch.setattr(ckpt, "save_training_state", real_save)
    assert ckpt.weights_metadata(out, "best")["valid_loss"] == 2.0
    r = train(config(tiny_corpus, out, max_steps=6, eval_interval=2), resume=True)  # validations: 2.5 (step 4), 2.4 (6)
    assert r.best_valid_loss == 2.0 and ckpt.weights_metadata(out, "best")["valid_loss"] == 2.0


# ---------------------------------------------------------------- --overwrite and failed starts
def test_overwrite_keeps_the_old_run_until_the_new_one_saves(tiny_corpus, out_dir, monkeypatch):
    train(config(tiny_corpus, out_dir))
    before = {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file() and p.name != ".lock"}
    monkeypatch.setattr(loop, "lr_factor", lambda *a: 1e6)  # the new run diverges before its first save
    with pytest.raises(Exception, match="diverged"):
        train(config(tiny_corpus, out_dir, max_steps=20, eval_interval=10, log_interval=1), overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out_dir.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert not (out_dir / ".staging").exists()


def test_overwrite_interrupted_before_any_validation_replaces_the_old_run_whole(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir, hidden_size=8))
    r = train(config(tiny_corpus, out_dir, max_steps=8, eval_interval=100), overwrite=True, stop_after=lambda s: s == 3)
    assert r.status == "interrupted"
    info = ckpt.open_checkpoint(out_dir)
    assert (
        info.model_config.hidden_size == 12 and not (out_dir / ckpt.BEST).exists()
    )  # the old best went with the old run
    assert [(x["type"], x["step"]) for x in ckpt.read_metrics(out_dir)] == [
        ("baselines", 0),
        ("train", 2),
        ("train", 3),
    ]  # the new run's records only
    ckpt.load_for_inference(out_dir)  # best falls back to the new last


def test_bf16_on_a_cpu_without_it_is_refused_before_anything_is_written(tiny_corpus, out_dir, monkeypatch):
    monkeypatch.setattr("charlm.runtime.devices.cpu_bf16_supported", lambda cell: False)
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--precision", "bf16", "--device", "cpu", "--max-steps", "2")
    line = one_line_error(result)
    assert "--precision bf16" in line and "CPU lacks" in line
    assert not out_dir.exists()
    assert (
        invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "2", "--quiet").exit_code == 0
    )  # no --overwrite needed


@pytest.mark.skipif(not cpu_bf16_supported("lstm"), reason="this CPU has no bf16 LSTM kernel in torch")
def test_bf16_where_the_cpu_has_it_trains_and_stores_the_carried_state_in_fp32(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir, precision="bf16", max_steps=3, eval_interval=10), stop_after=lambda s: s == 3)
    tensors, _ = ckpt.load_training_state(out_dir)
    assert tensors["carry/0"].dtype == torch.float32
    assert train(config(tiny_corpus, out_dir, max_steps=4), resume=True).step == 4


def test_precision_auto_on_cuda_follows_the_devices_native_support(monkeypatch):
    cuda = torch.device("cuda", 0)
    for capability, expected in (((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_precision("auto", cuda) == expected
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with pytest.raises(ConfigError, match="no native bf16"):
        resolve_precision("bf16", cuda)
    assert resolve_precision("auto", torch.device("cpu")) is None


def test_the_loss_scalers_state_is_saved_and_restored(tiny_corpus, out_dir, monkeypatch):
    monkeypatch.setattr(loop, "make_scaler", lambda amp_dtype, device: torch.amp.GradScaler("cpu", init_scale=2.0**10))
    train(config(tiny_corpus, out_dir, max_steps=2))
    _, saved = ckpt.load_training_state(out_dir)
    scale = saved["trainer"]["scaler"]["scale"]
    assert scale == 2.0**10
    seen = []
    real = loop.Loop.restore

    def spy(self, info):
        real(self, info)
        seen.append(self.scaler.get_scale())

    monkeypatch.setattr(loop.Loop, "restore", spy)
    train(config(tiny_corpus, out_dir, max_steps=3), resume=True)
    assert seen == [scale]


# ---------------------------------------------------------------- signals and storage errors
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_like_ctrl_c(tiny_corpus, out_dir, sig):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")

    class SendAtStep3:
        on_start = on_eval = on_end = staticmethod(lambda *_: None)

        def on_log(self, rec):
            if rec["step"] == 3:
                os.kill(os.getpid(), getattr(signal, sig))

    r = train(config(tiny_corpus, out_dir, max_steps=50, log_interval=1, eval_interval=100), observer=SendAtStep3())
    assert r.status == "interrupted" and r.signal == sig and r.step == 3
    assert ckpt.load_training_state(out_dir)[1]["trainer"]["step"] == 3
    assert train(config(tiny_corpus, out_dir, max_steps=5), resume=True).step == 5


def test_the_cli_exits_128_plus_the_signal_after_saving(tiny_corpus, out_dir, monkeypatch):
    real_log = loop.Loop.log
    sent = []

    def log_and_term(self):
        real_log(self)
        if self.state.step == 2 and not sent:  # once: a second signal means "stop now, without saving"
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop.Loop, "log", log_and_term)
    result = invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "50", "--log-interval", "1")
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert "stopped by SIGTERM at step 2" in result.output
    assert ckpt.load_training_state(out_dir)[1]["trainer"]["step"] == 2


@pytest.mark.parametrize(
    "errno, words",
    [(28, "No space left on device; free some disk space"), (13, "Permission denied; check the permissions")],
)
def test_a_full_disk_or_no_permission_is_one_line_and_keeps_the_previous_checkpoint(
    tiny_corpus, out_dir, monkeypatch, errno, words
):
    assert (
        invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "2", "--eval-interval", "2", "--quiet").exit_code
        == 0
    )
    last = (out_dir / ckpt.LAST).read_bytes()

    def fail(*a, **k):
        raise OSError(errno, os.strerror(errno))

    monkeypatch.setattr(ckpt, "save_file", fail)
    result = invoke(tiny_corpus, "--out", out_dir, "--resume", "--max-steps", "4", "--quiet")
    assert words in one_line_error(result)
    assert (out_dir / ckpt.LAST).read_bytes() == last
    monkeypatch.undo()
    assert invoke(tiny_corpus, "--out", out_dir, "--resume", "--max-steps", "4", "--quiet").exit_code == 0


def test_two_trainers_cannot_write_one_directory(tiny_corpus, out_dir):
    from charlm.fileio import DirectoryLock

    out_dir.mkdir()
    held = DirectoryLock(out_dir).acquire("test")
    try:
        with pytest.raises(StorageError, match="in use by pid"):
            train(config(tiny_corpus, out_dir))
    finally:
        held.release()
    assert train(config(tiny_corpus, out_dir)).step == 4


def test_stale_temporary_files_are_cleaned_by_the_next_writer(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir, max_steps=2))
    (out_dir / ".last.safetensors.abc123.tmp").write_bytes(b"half a file")
    (out_dir / ".staging").mkdir()
    (out_dir / ".staging" / "checkpoint.json").write_text("{}")
    train(config(tiny_corpus, out_dir, max_steps=4), resume=True)
    assert sorted(p.name for p in out_dir.iterdir() if p.name.startswith(".")) == [".lock"]


# ---------------------------------------------------------------- the resume rules
def test_resume_records_its_limits_and_a_finished_run_says_there_is_nothing_to_do(tiny_corpus, out_dir):
    assert (
        invoke(tiny_corpus, "--out", out_dir, *TINY, "--max-steps", "4", "--eval-interval", "2", "--quiet").exit_code
        == 0
    )
    assert invoke(tiny_corpus, "--out", out_dir, "--resume", "--max-steps", "8", "--quiet").exit_code == 0
    assert json.loads((out_dir / "checkpoint.json").read_text())["train"]["run"]["max_steps"] == 8
    result = invoke(tiny_corpus, "--out", out_dir, "--resume", "--quiet")
    assert result.exit_code == 0 and "already reached its limit at step 8" in result.stderr
    assert ckpt.load_training_state(out_dir)[1]["trainer"]["step"] == 8
    assert invoke(tiny_corpus, "--out", out_dir, "--resume", "--max-steps", "10", "--quiet").exit_code == 0
    assert ckpt.load_training_state(out_dir)[1]["trainer"]["step"] == 10


def test_the_library_resume_keeps_the_runs_own_limits(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir, max_steps=4))
    r = train(
        TrainConfig.from_options(corpus=(str(tiny_corpus),), out=str(out_dir)), resume=True
    )  # no limit given: the run's own
    assert r.step == 4 and r.resumed_from == 4


def test_resuming_with_another_validation_text_chooses_best_again(tiny_corpus, tiny_text, tmp_path):
    out = tmp_path / "run"
    v1, v2 = tmp_path / "v1.txt", tmp_path / "v2.txt"
    v1.write_text(tiny_text[:300], encoding="utf-8")
    v2.write_text(tiny_text[300:700].upper(), encoding="utf-8")  # much harder: a loss no lower than v1's
    train(config(tiny_corpus, out, valid=(str(v1),), max_steps=4))
    seen = []

    class Watch:
        on_log = on_end = staticmethod(lambda *_: None)

        def on_start(self, info):
            seen.extend(info["warnings"])

        def on_eval(self, rec):
            seen.append(rec)

    r = train(config(tiny_corpus, out, valid=(str(v2),), max_steps=6), resume=True, observer=Watch())
    assert any("validation text differs" in str(w) for w in seen)
    first = next(x for x in seen if isinstance(x, dict))
    assert first["improved"] is True  # compared with nothing, not with v1's loss
    assert r.best_valid_loss == min(x["valid_loss"] for x in seen if isinstance(x, dict))
    assert ckpt.weights_metadata(out, "best")["valid_loss"] == r.best_valid_loss


def test_a_mostly_unknown_validation_text_warns_with_the_rate(tiny_corpus, tmp_path):
    valid = tmp_path / "greek.txt"
    valid.write_text("αβγδ εζηθ ικλμ\n" * 20, encoding="utf-8")
    result = invoke(tiny_corpus, "--out", tmp_path / "run", *TINY, "--valid", valid, "--max-steps", "2", "--quiet")
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "% of the validation tokens are outside the vocabulary" in result.stderr


def test_seeds_past_64_bits_are_usage_errors(tiny_corpus, out_dir):
    result = invoke(tiny_corpus, "--out", out_dir, "--seed", str(2**64), "--max-steps", "2")
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output
    with pytest.raises(ConfigError, match="--seed"):
        config(tiny_corpus, out_dir, seed=2**64)


def test_the_default_output_of_a_dot_corpus_is_named_after_the_directory(tmp_path, monkeypatch):
    corpus = tmp_path / "mytexts"
    corpus.mkdir()
    monkeypatch.chdir(corpus)
    assert TrainConfig.from_options(corpus=(".",)).out_dir == Path("checkpoints") / "mytexts"
    assert TrainConfig.from_options(corpus=("./",)).out_dir == Path("checkpoints") / "mytexts"


def test_the_library_resume_refuses_a_changed_model_option(tiny_corpus, out_dir):
    train(config(tiny_corpus, out_dir))
    with pytest.raises(ConfigError, match="--hidden-size cannot change when resuming"):
        train(config(tiny_corpus, out_dir, hidden_size=20, max_steps=6), resume=True)
