"""README's "Library" example runs as written, so it cannot rot: the one Python block of that section,
with its checkpoint and corpus paths pointed at a tiny run trained here and its training run cut short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import charlm

README = Path(__file__).parent.parent / "README.md"
TEXT = "ROMEO: But soft, what light through yonder window breaks?\nHAMLET: To be, or not to be.\n" * 150


def library_example() -> str:
    """The ```python block of README's "## Library" section (there must be exactly one)."""
    section = README.read_text(encoding="utf-8").split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "README's Library section should hold one python block"
    return blocks[0]


def test_the_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # nothing the example writes lands in the repository
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    tiny = charlm.train(
        corpus, out=tmp_path / "tiny", hidden_size=32, emb_size=16, num_layers=1, batch_size=4, bptt=32,
        max_steps=20, eval_interval=10, precision="fp32", device="cpu", baselines=False, seed=1,
    )  # fmt: skip
    substitutions = {  # README's text -> what runs here (each must stay in the README)
        '"checkpoints/tinyshakespeare"': repr(str(tiny.out)),
        '"corpora/tinyshakespeare.txt"': repr(str(corpus)),
        '"checkpoints/shakes-small"': repr(str(tmp_path / "small")),
        '"checkpoints/no-such-run"': repr(str(tmp_path / "no-such-run")),
        "max_steps=300": "max_steps=4",
    }
    code = library_example()
    for readme_text, here in substitutions.items():
        assert readme_text in code, f"README's example no longer says {readme_text}; update this test"
        code = code.replace(readme_text, here)
    exec(compile(code, "README.md (Library)", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "LanguageModel(" in out and "does not exist" in out  # the first print and the one-line error
    assert (tmp_path / "small" / "checkpoint.json").is_file()
