"""Checkpoint directories: round trips, atomic writes, and refusing unsafe or broken files."""

from __future__ import annotations

import json
import pathlib
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.checkpoint import loading
from charlm.checkpoint import store as ckpt
from charlm.checkpoint import tensors as tensors_mod
from charlm.data.tokenizers import fit_tokenizer
from charlm.errors import CheckpointError, StorageError
from charlm.models.rnn import ModelConfig, RNNLanguageModel
from charlm.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_text) -> tuple[Path, Path]:
    """(a finished tiny run's checkpoint dir, its corpus), trained once per module."""
    base = tmp_path_factory.mktemp("ckpt")
    corpus = base / "tiny.txt"
    corpus.write_text(tiny_text, encoding="utf-8")
    cfg = TrainConfig.from_options(
        corpus=(str(corpus),),
        out=str(base / "run"),
        hidden_size=8,
        emb_size=4,
        num_layers=1,
        batch_size=4,
        bptt=16,
        max_steps=4,
        eval_interval=2,
        log_interval=2,
        eval_streams=2,
        device="cpu",
    )
    train(cfg)
    return base / "run", corpus


@pytest.fixture
def run_dir(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run[0], dst)
    return dst


def resume_config(run_dir: Path, corpus: Path) -> TrainConfig:
    stored = TrainConfig.from_dict(ckpt.open_checkpoint(run_dir).train_config)
    return stored.replace(out=str(run_dir), corpus=[str(corpus)], max_steps=6)


def one_line_checkpoint_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, CheckpointError)
    assert msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------- round trips
def test_load_for_inference_rebuilds_the_same_model(tmp_path, tiny_text):
    torch.manual_seed(0)
    tok = fit_tokenizer("char", tiny_text)
    model = RNNLanguageModel(
        ModelConfig(vocab_size=tok.vocab_size, cell="gru", hidden_size=6, emb_size=4, tie_weights=True)
    ).eval()
    ckpt.write_inference_checkpoint(tmp_path / "exp", model, tok)
    loaded, tok2, info = ckpt.load_for_inference(tmp_path / "exp")
    assert tok2 == tok and info.model_config == model.config and not loaded.training
    assert loaded.decoder.weight is loaded.embedding.weight  # tying survives the round trip
    ids = torch.randint(0, tok.vocab_size, (2, 7))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    # The tied matrix is stored once.
    tensors, _ = tensors_mod.load_tensors(tmp_path / "exp" / ckpt.BEST)
    assert "model/decoder.weight" not in tensors and "model/embedding.weight" in tensors


def test_optimizer_state_round_trips_through_flat_tensors_and_json():
    torch.manual_seed(0)
    model = RNNLanguageModel(ModelConfig(vocab_size=5, hidden_size=4, emb_size=3, num_layers=1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    model(torch.randint(0, 5, (2, 3)))[0].sum().backward()
    opt.step()
    tensors, data = ckpt.optimizer_to_flat(opt)
    data = json.loads(json.dumps(data))  # as it is stored
    opt2 = torch.optim.AdamW(model.parameters(), lr=1.0)
    ckpt.optimizer_from_flat(opt2, tensors, data)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for idx in a["state"]:
        for key, val in a["state"][idx].items():
            torch.testing.assert_close(b["state"][idx][key], val)


def test_best_falls_back_to_last_before_any_validation(run_dir):
    (run_dir / ckpt.BEST).unlink()
    model, _, _ = ckpt.load_for_inference(run_dir, "best")
    assert isinstance(model, RNNLanguageModel)
    with pytest.raises(CheckpointError, match="unknown checkpoint"):
        ckpt.load_for_inference(run_dir, "middle")


def test_read_metrics_skips_a_line_cut_short(run_dir):
    records = ckpt.read_metrics(run_dir)
    assert records
    with open(run_dir / ckpt.METRICS, "a", encoding="utf-8") as f:
        f.write('{"type": "train", "st')
    assert ckpt.read_metrics(run_dir) == records


# ---------------------------------------------------------------- refused files
class _Payload:
    """Unpickling this creates a marker file: proof that code ran on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _plant_payload(path: Path, marker: Path) -> None:
    torch.save({"model/embedding.weight": _Payload(marker)}, path)


def test_the_payload_is_real(tmp_path):
    """Sanity check of the attack: an unsafe torch.load of the file does run code."""
    marker = tmp_path / "pwned"
    _plant_payload(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("which", ["best", "last"])
def test_a_malicious_weights_file_is_refused_for_inference(run_dir, tmp_path, which):
    marker = tmp_path / "pwned"
    _plant_payload(run_dir / f"{which}.safetensors", marker)
    with pytest.raises(CheckpointError) as exc:
        ckpt.load_for_inference(run_dir, which)
    msg = one_line_checkpoint_error(exc)
    assert "not a valid safetensors file" in msg
    assert not marker.exists()


def test_a_malicious_last_is_refused_on_resume(run_dir, trained_run, tmp_path):
    marker = tmp_path / "pwned"
    _plant_payload(run_dir / ckpt.LAST, marker)
    before = (run_dir / ckpt.BEST).read_bytes()
    with pytest.raises(CheckpointError) as exc:
        train(resume_config(run_dir, trained_run[1]), resume=True)
    one_line_checkpoint_error(exc)
    assert not marker.exists()
    assert (run_dir / ckpt.BEST).read_bytes() == before


def test_a_truncated_weights_file_is_refused(run_dir):
    data = (run_dir / ckpt.BEST).read_bytes()
    (run_dir / ckpt.BEST).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as exc:
        ckpt.load_for_inference(run_dir)
    assert "corrupt" in one_line_checkpoint_error(exc)


def test_a_corrupt_header_is_refused(run_dir, trained_run):
    data = bytearray((run_dir / ckpt.LAST).read_bytes())
    data[8:24] = b"\xff" * 16  # inside the JSON header
    (run_dir / ckpt.LAST).write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as exc:
        train(resume_config(run_dir, trained_run[1]), resume=True)
    one_line_checkpoint_error(exc)


def test_weights_of_the_wrong_shape_are_refused(run_dir):
    meta = json.loads((run_dir / ckpt.META_FILE).read_text())
    meta["model"]["hidden_size"] = 12
    (run_dir / ckpt.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as exc:
        ckpt.load_for_inference(run_dir)
    assert "shape" in one_line_checkpoint_error(exc)


def test_a_weights_only_last_cannot_be_resumed(run_dir, trained_run):
    shutil.copy(run_dir / ckpt.BEST, run_dir / ckpt.LAST)
    with pytest.raises(CheckpointError, match="weights only") as exc:
        train(resume_config(run_dir, trained_run[1]), resume=True)
    one_line_checkpoint_error(exc)


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_another_format_version_is_refused(run_dir, version):
    meta = json.loads((run_dir / ckpt.META_FILE).read_text())
    meta["format_version"] = version
    (run_dir / ckpt.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version") as exc:
        ckpt.load_for_inference(run_dir)
    one_line_checkpoint_error(exc)


def test_a_corrupt_description_is_refused(run_dir):
    (run_dir / ckpt.META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError) as exc:
        ckpt.open_checkpoint(run_dir)
    assert "corrupt" in one_line_checkpoint_error(exc)


def test_a_missing_or_foreign_directory_is_refused(tmp_path, run_dir):
    with pytest.raises(CheckpointError, match="does not exist") as exc:
        ckpt.load_for_inference(tmp_path / "nowhere")
    one_line_checkpoint_error(exc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a charlm checkpoint") as exc:
        ckpt.load_for_inference(tmp_path / "empty")
    one_line_checkpoint_error(exc)
    (run_dir / ckpt.BEST).unlink()
    (run_dir / ckpt.LAST).unlink()
    with pytest.raises(CheckpointError, match="missing") as exc:
        ckpt.load_for_inference(run_dir)
    one_line_checkpoint_error(exc)


def test_a_missing_tokenizer_is_refused(run_dir):
    (run_dir / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError) as exc:
        ckpt.load_for_inference(run_dir)
    one_line_checkpoint_error(exc)


def test_a_file_inside_the_directory_opens_the_directory(run_dir):
    info = ckpt.open_checkpoint(run_dir / ckpt.BEST)
    assert info.path == run_dir and (run_dir / ckpt.BEST).is_file() and (run_dir / ckpt.LAST).is_file()


# ---------------------------------------------------------------- damaged weights (SHA-256)
def flip_middle_bytes(path: Path) -> None:
    """Flip two bytes in the middle of a safetensors file's data section (after its 8-byte length and header)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    mid = start + (len(data) - start) // 2
    data[mid] ^= 0xFF
    data[mid + 1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_every_weights_file_records_the_digest_of_its_tensors(run_dir):
    for name in (ckpt.BEST, ckpt.LAST):
        tensors, metadata = tensors_mod.load_tensors(run_dir / name)
        assert metadata[ckpt.DIGEST_KEY] == ckpt.tensor_digest(tensors)


@pytest.mark.parametrize("which, other", [("best", "last"), ("last", "best")])
def test_a_damaged_weights_file_is_refused_naming_it_and_the_other(run_dir, which, other):
    path = run_dir / f"{which}.safetensors"
    flip_middle_bytes(path)
    with pytest.raises(CheckpointError) as exc:
        ckpt.load_for_inference(run_dir, which)
    msg = one_line_checkpoint_error(exc)
    assert msg.startswith(f"{path} is damaged (its weights do not match the SHA-256 recorded when it was written)")
    assert f"--which {other}" in msg and "--no-verify" in msg
    model, _, _ = ckpt.load_for_inference(run_dir, other)  # the other one is whole
    assert isinstance(model, RNNLanguageModel)
    damaged, _, _ = ckpt.load_for_inference(run_dir, which, verify=False)
    assert isinstance(damaged, RNNLanguageModel)


def test_without_the_other_file_the_remedy_is_to_train_again(tmp_path):
    tok = fit_tokenizer("char", "abc\n")
    model = RNNLanguageModel(ModelConfig(vocab_size=tok.vocab_size, hidden_size=8, emb_size=4, num_layers=1))
    ckpt.write_inference_checkpoint(tmp_path / "exp", model, tok)
    flip_middle_bytes(tmp_path / "exp" / ckpt.BEST)
    with pytest.raises(CheckpointError, match=r"; train again; --no-verify loads it anyway$"):
        ckpt.load_for_inference(tmp_path / "exp")


def test_resuming_from_a_damaged_last_is_refused(run_dir, trained_run):
    flip_middle_bytes(run_dir / ckpt.LAST)
    before = {name: (run_dir / name).read_bytes() for name in (ckpt.BEST, ckpt.LAST, ckpt.METRICS)}
    with pytest.raises(CheckpointError) as exc:
        train(resume_config(run_dir, trained_run[1]), resume=True)
    msg = one_line_checkpoint_error(exc)
    assert msg.startswith(f"{run_dir / ckpt.LAST} is damaged") and "--overwrite" in msg
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def test_a_damaged_best_does_not_stop_a_resume(run_dir, trained_run):
    flip_middle_bytes(run_dir / ckpt.BEST)
    assert ckpt.weights_metadata(run_dir, "best")["step"] == 4  # the header alone is read
    result = train(resume_config(run_dir, trained_run[1]), resume=True)
    assert result.step == 6


def test_a_file_written_before_digests_loads_as_before(run_dir):
    from safetensors.torch import save_file

    tensors, metadata = tensors_mod.load_tensors(run_dir / ckpt.BEST)
    del metadata[ckpt.DIGEST_KEY]
    save_file(tensors, str(run_dir / ckpt.BEST), metadata=metadata)
    flip_middle_bytes(run_dir / ckpt.BEST)  # nothing to check it against
    model, _, _ = ckpt.load_for_inference(run_dir)
    assert isinstance(model, RNNLanguageModel)


def test_a_damaged_header_is_still_not_a_valid_file(run_dir):
    data = bytearray((run_dir / ckpt.BEST).read_bytes())
    data[8] ^= 0xFF  # the header's opening brace
    (run_dir / ckpt.BEST).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        ckpt.load_for_inference(run_dir)


_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool]


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(
        st.text("abcdefghij/._", min_size=1, max_size=12),
        st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 4), max_size=3), st.integers(0, 2**31)),
        min_size=1,
        max_size=4,
    )
)
def test_any_tensors_round_trip_with_a_digest_that_catches_a_flipped_bit(tmp_path_factory, specs):
    tensors = {}
    for name, (dtype, shape, seed) in specs.items():
        g = torch.Generator().manual_seed(seed)
        tensors[name] = (torch.randn(shape, generator=g) * 100).to(dtype)
    path = tmp_path_factory.mktemp("rt") / "t.safetensors"
    ckpt.save_tensors(path, tensors, {"charlm": "{}"})
    loaded, _ = tensors_mod.load_tensors(path)
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t)
    if sum(t.numel() for t in tensors.values()):
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01 if data[-1] not in (0, 1) else 0x40  # the data section's last byte, bool or not
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="is damaged"):
            tensors_mod.load_tensors(path)


# ---------------------------------------------------------------- atomic writes
def _temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_a_finished_run_leaves_no_temp_files(run_dir):
    assert _temp_files(run_dir) == []
    ckpt.atomic_write_json(run_dir / "x.json", {"a": 1})
    ckpt.atomic_write_bytes(run_dir / "x.bin", b"abc")
    assert json.loads((run_dir / "x.json").read_text()) == {"a": 1}
    assert (run_dir / "x.bin").read_bytes() == b"abc"
    assert _temp_files(run_dir) == []


def test_a_failing_tensor_write_leaves_the_previous_file_intact(run_dir, monkeypatch):
    before = (run_dir / ckpt.LAST).read_bytes()
    real_save = ckpt.save_file

    def half_then_fail(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:  # a kill half-way through the write
            f.truncate(f.seek(0, 2) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", half_then_fail)
    model, _ = loading.build_model(ckpt.open_checkpoint(run_dir), "last")
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(StorageError, match="No space left on device; free some disk space") as exc:
        ckpt.save_training_state(run_dir, model, opt, {"step": 99}, {})
    assert "\n" not in str(exc.value)
    with pytest.raises(StorageError):
        ckpt.save_weights(run_dir, "best", model, {"step": 99})
    assert (run_dir / ckpt.LAST).read_bytes() == before
    assert _temp_files(run_dir) == []
    _, data = ckpt.load_training_state(run_dir)
    assert data["trainer"]["step"] == 4
    ckpt.load_for_inference(run_dir, "best")


def test_a_failing_byte_write_leaves_the_previous_file_intact(run_dir, monkeypatch):
    before = (run_dir / ckpt.META_FILE).read_bytes()

    def fail(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ckpt.os, "fsync", fail)
    with pytest.raises(StorageError, match="Input/output error"):
        ckpt.atomic_write_json(run_dir / ckpt.META_FILE, {"format": "garbage"})
    monkeypatch.undo()
    assert (run_dir / ckpt.META_FILE).read_bytes() == before
    assert _temp_files(run_dir) == []
    ckpt.open_checkpoint(run_dir)


def test_truncate_metrics_keeps_records_up_to_a_step(run_dir):
    ckpt.truncate_metrics(run_dir, 2)
    assert {r["step"] for r in ckpt.read_metrics(run_dir)} == {0, 2}  # 0: the baselines, measured at the start
    assert _temp_files(run_dir) == []
