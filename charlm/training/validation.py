"""What a validation record holds besides the counters: figures from a `TextScore`, and a short sample.

Shared by every language-model task (the recurrent one and the n-gram one), so their metrics.jsonl
rows compare field by field.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from charlm.data import Tokenizer
from charlm.sampling import DecodingOptions, generate
from charlm.training.config import TrainConfig

# Tokens of the sample generated at each validation, by level (`sample_length` None).
SAMPLE_LENGTH = {"char": 200, "subword": 60, "word": 40}


def valid_figures(score: Any) -> dict[str, Any]:
    """A validation record's figures from a `TextScore` (any model kind)."""
    return {
        "valid_loss": score.loss,
        "valid_ppl": math.exp(min(score.loss, 700.0)),
        "valid_bpc": score.bits_per_char,
        "valid_bpb": score.bits_per_byte,
        "valid_tokens": score.tokens,
        "valid_oov": score.oov,
    }


def sample_prompt(text: str, limit: int = 40) -> str:
    """The start of the first non-empty line of `text`: at most `limit` characters, cut after a space."""
    line = next((ln for ln in text.split("\n") if ln.strip()), "")
    if len(line) <= limit:
        return line
    cut = line.rfind(" ", 0, limit)
    return line[: cut + 1] if cut > 0 else line[:limit]


def validation_sample(
    model: Any, tok: Tokenizer, valid_ids: np.ndarray, config: TrainConfig, device: torch.device
) -> dict[str, str] | None:
    """A short continuation of the validation text's first line, as char-rnn users watch a model learn.

    Drawn at temperature 0.8 from a generator seeded with the run's seed, so samples
    of successive validations (and of any model kind) are comparable and training's
    random state is untouched.
    """
    length = SAMPLE_LENGTH.get(tok.kind, 60) if config.run.sample_length is None else config.run.sample_length
    if length == 0:
        return None
    prompt = sample_prompt(tok.decode(np.asarray(valid_ids[:200]).tolist()))
    options = DecodingOptions(max_new_tokens=length, temperature=0.8, lines=length if tok.eos_id is not None else None)
    [result] = generate(model, tok, prompt, options, torch.Generator(device).manual_seed(config.run.seed))
    return {"prompt": prompt, "text": result.text}
