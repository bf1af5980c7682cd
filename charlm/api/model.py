"""`LanguageModel`: a checkpoint loaded once, to generate, stream, score and measure perplexity from Python.

It does what `charlm generate` and `charlm perplexity` do, in the same order and with the same figures:
the decoding options checked against the vocabulary, a seeded `torch.Generator` (same seed, same text as
the command line), the prompt read after a line end with its unseen units reported, and a text scored by
the protocol of `charlm.evaluation` (each token predicted from all before it, the first after a line end).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

import torch

from charlm.api.keywords import DecodingKeywords, GenerateKeywords, check_names, random_seed
from charlm.api.many import Request, check_logprobs, generate_many, make_request
from charlm.api.results import Completions, Stream, TokenScores
from charlm.checkpoint import CheckpointInfo, load_for_inference, open_checkpoint
from charlm.classify import load_classifier
from charlm.data import Tokenizer, iter_text_chunks, normalise_newlines
from charlm.errors import CheckpointError, ConfigError
from charlm.evaluation import (
    DEFAULT_STREAMS,
    DEFAULT_WINDOW,
    TextScore,
    context_id,
    evaluate_file,
    evaluate_text,
    model_device,
    score_lines,
)
from charlm.runtime import resolve_device
from charlm.sampling import DecodingOptions, Prompt, describe_unknown, encode_prompt, generate, seed_of, stream
from charlm.training import MAX_SEED

if TYPE_CHECKING:
    from typing import Unpack

_DECODING_FIELDS = frozenset(f.name for f in dataclasses.fields(DecodingOptions))


def load(
    path: str | os.PathLike[str], which: str = "best", device: str | torch.device = "auto", verify: bool = True
) -> Any:
    """The model of a checkpoint directory written by `charlm train`: a `LanguageModel` (a recurrent network or
    a Kneser-Ney model), or for a task's run the task's handle: a tagger (`--model tag`:
    `charlm.tagging.SequenceTagger`, with `.tag` and `.evaluate`) or a text classifier (`--model classify`: a
    `Classifier`, with `classify(texts)` and `evaluate(file)`); checkpoint.json's "task" says which
    (`TASK_LOADERS`).

    which: "best" (the lowest validation loss; `last` while no validation ran) or "last" (the newest save);
    a Kneser-Ney run has one model and ignores it. device: "auto" (a CUDA GPU when there is one), "cpu",
    "cuda", "cuda:N", "mps" or a torch.device. verify=False loads weights that do not match their recorded
    SHA-256 (a damaged file). Raises `CheckpointError` for a missing, damaged or foreign directory.
    """
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    task = open_checkpoint(Path(path)).meta.get("task")
    if task is not None:
        if task not in TASK_LOADERS:
            raise CheckpointError(f"{path} holds a model for the task {task!r}, which this charlm cannot load")
        return TASK_LOADERS[task](Path(path), which=which, device=dev, verify=verify)
    return load_language_model(path, which, dev, verify)


def load_language_model(
    path: str | os.PathLike[str], which: str = "best", device: str | torch.device = "auto", verify: bool = True
) -> LanguageModel:
    """`load` for a language model's checkpoint; one of a task's (a tagger, a classifier) is a one-line
    CheckpointError."""
    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', got {which!r}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model, tokenizer, info = load_for_inference(Path(path), which=which, device=dev, verify=verify)
    return LanguageModel(model, tokenizer, info)


def _load_tagger(path: Path, which: str, device: torch.device, verify: bool) -> Any:
    from charlm.tagging import SequenceTagger, load_tagger

    return SequenceTagger(*load_tagger(path, which, device, verify))


# What `load` returns for a checkpoint whose checkpoint.json names a task (absent: a language model).
TASK_LOADERS: dict[str, Callable[..., Any]] = {"tag": _load_tagger, "classify": load_classifier}


class LanguageModel:
    """A loaded checkpoint: `generate`, `stream`, `score` and `perplexity`, with its tokenizer and metadata."""

    def __init__(self, model: Any, tokenizer: Tokenizer, info: CheckpointInfo) -> None:
        self.model = model  # the network (eval mode), for who needs its tensors
        self.tokenizer = tokenizer
        self.info = info  # what checkpoint.json says: the model and training options, the run id, ...
        self._embedder: Any = None  # charlm.embeddings.CharLMEmbedding, made by the first `embed`

    @property
    def path(self) -> Path:
        return self.info.path

    @property
    def kind(self) -> str:
        """ "rnn" (a recurrent network) or "kn" (a Kneser-Ney n-gram model)."""
        return self.info.model_kind

    @property
    def reverse(self) -> bool:
        """True for a backward LM (`charlm train --reverse`): it reads text last character first."""
        data = self.info.train_config.get("data")
        return bool(data.get("reverse", False)) if isinstance(data, dict) else False

    def embed(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[torch.Tensor]:
        """Contextual string embeddings (Akbik et al. 2018) of the words of each sentence (a list of words):
        a tensor (words, D) per sentence, the LM's state at each word's end (a forward LM) or start (a
        backward LM). The LM is frozen; each distinct sentence is read once (`charlm.embeddings`)."""
        if self.kind != "rnn" or self.level != "char":
            raise ConfigError("contextual string embeddings come from a character-level recurrent LM")
        if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
            raise ConfigError("embed takes a list of sentences, each a list of words")
        if self._embedder is None:
            from charlm.embeddings import CharLMEmbedding

            self._embedder = CharLMEmbedding(self.model, self.tokenizer, self.reverse)
        return self._embedder.embed(sentences, batch_size)

    @property
    def level(self) -> str:
        """What a token is: "char", "word" or "subword"."""
        return self.tokenizer.kind

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def __repr__(self) -> str:
        return (
            f"LanguageModel({str(self.path)!r}, kind={self.kind!r}, level={self.level!r}, "
            f"vocab_size={self.tokenizer.vocab_size}, device={str(self.device)!r})"
        )

    def decoding(self, options: DecodingOptions | None = None, **keywords: Unpack[DecodingKeywords]) -> DecodingOptions:
        """`options` (default: `DecodingOptions()`) with `keywords` replacing its fields, checked against this
        model's vocabulary. A misspelt keyword or a value out of range is a one-line `ConfigError`."""
        check_names(keywords, _DECODING_FIELDS, "decoding")
        changes: dict[str, Any] = dict(keywords)
        if "stop" in changes:
            stop = changes["stop"]
            changes["stop"] = (stop,) if isinstance(stop, str) else tuple(stop or ())
        result = dataclasses.replace(options or DecodingOptions(), **changes)
        result.check_vocab(self.tokenizer.vocab_size)
        return result

    def generator(self, seed: int) -> torch.Generator:
        """A `torch.Generator` on the model's device seeded with `seed` (0 to 2**63-1): same seed, same text."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
        return torch.Generator(device=self.device).manual_seed(seed)

    def prompt(self, text: str | Prompt) -> Prompt:
        """`text` as the model reads it: after a line end, CRLF read as LF; `unknown` lists the units outside
        the vocabulary, which are read as <unk> (`TokenizerError` when the vocabulary has no <unk>)."""
        if isinstance(text, Prompt):
            return text
        if not isinstance(text, str):
            raise ConfigError(f"a prompt is a string, got {type(text).__name__}")
        return encode_prompt(self.tokenizer, text)

    def generate(
        self,
        prompt: str | Prompt = "",
        options: DecodingOptions | None = None,
        *,
        logprobs: int = 0,
        **keywords: Unpack[GenerateKeywords],
    ) -> Completions:
        """Continue `prompt` (default: a fresh line): `num_samples` samples drawn as one batch, one greedy text,
        or the n best beam hypotheses, best first. Decoding options come as `options` and/or keywords, and
        `seed=` (`GenerateKeywords`): the same seed gives the text `charlm generate --seed` gives.
        logprobs=N (greedy, sampling): each result's `tokens` hold every generated token's log-probability
        and the N most likely tokens at that step (`TokenInfo`), the same text either way."""
        p, opts, rng, seed = self._request(prompt, options, keywords)
        if check_logprobs(logprobs, opts):
            request = Request(p.text, p, opts, seed_of(rng), logprobs)
            [found] = generate_many(self, [request], max(opts.num_samples, 1))
            return dataclasses.replace(found, prompt=prompt if isinstance(prompt, str) else p.text, seed=seed)
        results = generate(self.model, self.tokenizer, p, opts, rng)
        return Completions(
            prompt=prompt if isinstance(prompt, str) else p.text,
            options=opts,
            results=tuple(results),
            seed=seed,
            unk_masked=not opts.allow_unk and self.tokenizer.unk_id is not None,
            unknown=p.unknown,
            warning=describe_unknown(self.tokenizer, p),
        )

    def request(
        self,
        item: str | Mapping[str, Any],
        options: DecodingOptions | None = None,
        *,
        seed: int = 0,
        logprobs: int = 0,
        batch_size: int = 256,
        **keywords: Unpack[DecodingKeywords],
    ) -> Request:
        """One prompt of `generate_many`, checked: a string, or {"prompt": ..., its own decoding options,
        "seed", "logprobs", "id"}; its options replace `options` and `keywords`. One-line ConfigError."""
        shared = self.decoding(options, **keywords)
        return make_request(self, item, shared, seed, logprobs, batch_size)

    def generate_many(
        self,
        prompts: Iterable[str | Mapping[str, Any] | Request],
        options: DecodingOptions | None = None,
        *,
        seed: int | None = None,
        logprobs: int = 0,
        batch_size: int = 256,
        **keywords: Unpack[DecodingKeywords],
    ) -> Iterator[Completions]:
        """Continue many prompts as one running batch (up to `batch_size` rows at once); yield a `Completions`
        per prompt, in input order, as soon as it and those before it are done. A prompt is a string or an
        object with its own options (see `request`); prompt i without a seed of its own gets `seed + i`
        (`seed`: default a fresh one, `Completions.seed` reports each). Every prompt is checked before the
        first is decoded. Each text equals `generate(prompt, options, seed=its seed)`: every row draws from
        its own random stream (`charlm.sampling.rng`)."""
        base = random_seed() if seed is None else seed
        self.generator(base)
        requests = [
            p
            if isinstance(p, Request)
            else self.request(
                p, options, seed=(base + i) % (MAX_SEED + 1), logprobs=logprobs, batch_size=batch_size, **keywords
            )
            for i, p in enumerate(prompts)
        ]
        return generate_many(self, requests, batch_size)

    def stream(
        self, prompt: str | Prompt = "", options: DecodingOptions | None = None, **keywords: Unpack[GenerateKeywords]
    ) -> Stream:
        """One continuation (greedy or sampled) as text pieces while it is produced; joined, they are the text
        `generate` returns for the same options and seed. Beam search and several samples cannot stream."""
        p, opts, rng, seed = self._request(prompt, options, keywords)
        return Stream(stream(self.model, self.tokenizer, p, opts, rng), seed, describe_unknown(self.tokenizer, p))

    def _request(
        self, prompt: str | Prompt, options: DecodingOptions | None, keywords: GenerateKeywords
    ) -> tuple[Prompt, DecodingOptions, torch.Generator | int, int | None]:
        """What a decoding call needs, checked in the command line's order: options, seed, then the prompt.
        -> (prompt, options, what the decoder draws its seed from, the seed to report)."""
        seed = keywords.pop("seed", None)
        opts = self.decoding(options, **cast(DecodingKeywords, keywords))
        if isinstance(seed, torch.Generator):
            return self.prompt(prompt), opts, seed, None
        seed = random_seed() if seed is None else seed
        self.generator(seed)  # the seed's check, one line naming the range
        return self.prompt(prompt), opts, seed, seed

    def perplexity(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        text: str | None = None,
        exact: bool = False,
        streams: int = DEFAULT_STREAMS,
        window: int = DEFAULT_WINDOW,
        encoding_errors: str = "strict",
        progress: Callable[[int], None] | None = None,
    ) -> TextScore:
        """The figures `charlm perplexity` reports for one file (`path`) or a string (`text=`): tokens, NLL,
        loss, perplexity, bits per character and per byte, out-of-vocabulary counts (`TextScore`).

        exact=True scores one stream (the reference figure); otherwise `streams` parallel segments, each warmed
        on the tokens before it. A text is read as a file holding it would be (CRLF as LF). `progress(n)` is
        called with the bytes of each piece of a file scored. Raises `CorpusError` for a missing, empty,
        binary or (encoding_errors="strict") non-UTF-8 file. A backward LM (`reverse`) reads the text last
        character first, as it was trained (a file is then read whole).
        """
        if (path is None) == (text is None):
            raise ConfigError("give a file's path or text=..., one of the two")
        for name, value in (("streams", streams), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer of at least 1, got {value!r}")
        scoring = dict(exact=exact, streams=streams, window=window)
        if text is None and self.reverse:  # a backward LM reads the file last character first: read it whole
            assert path is not None
            text = "".join(iter_text_chunks(path, errors=encoding_errors))
        if text is not None:
            read = normalise_newlines(_string(text))
            return evaluate_text(self.model, self.tokenizer, read[::-1] if self.reverse else read, **scoring)
        assert path is not None
        return evaluate_file(self.model, self.tokenizer, path, errors=encoding_errors, progress=progress, **scoring)

    @overload
    def score(self, text: str) -> TokenScores: ...  # type: ignore[overload-overlap]  # a str is a Sequence[str]
    @overload
    def score(self, text: Sequence[str]) -> list[TokenScores]: ...
    def score(self, text: str | Sequence[str]) -> TokenScores | list[TokenScores]:
        """The log-probability of a text (or of each text of a list), token by token, exactly as `perplexity`
        scores it with exact=True: `TokenScores` (tokens, logprobs, their sum `logprob`, `mean`, `perplexity`).
        Each text is its own stream from the zero state; a list is scored as batches of texts of about one
        length (`charlm.evaluation.score_lines`), with the figures of scoring each alone."""
        if isinstance(text, str):
            return self.score([text])[0]
        if not isinstance(text, Sequence):
            raise ConfigError(f"score takes a string or a list of strings, got {type(text).__name__}")
        reads = [normalise_newlines(_string(t)) for t in text]
        if self.reverse:  # a backward LM reads each text last character first (its tokens come out so)
            reads = [r[::-1] for r in reads]
        ids = [self.tokenizer.encode(r) if r else [] for r in reads]
        logprobs = score_lines(self.model, ids, context_id(self.tokenizer))  # the texts as batches
        names: dict[int, str] = {}
        return [
            TokenScores(
                text=t,
                tokens=tuple(names.get(i) or names.setdefault(i, self._token_text(i)) for i in row),
                ids=tuple(row),
                logprobs=tuple(lp.tolist()),
                unknown=tuple(dict.fromkeys(self.tokenizer.unknown_units(r))) if r else (),
            )
            for t, r, row, lp in zip(text, reads, ids, logprobs)
        ]

    def _token_text(self, token: int) -> str:
        if token == self.tokenizer.unk_id:
            return "<unk>"
        if token == self.tokenizer.eos_id:
            return "<eos>"
        return self.tokenizer.decode([token])


def _string(text: Any) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"a text to score is a string, got {type(text).__name__}")
    return text
