"""`--model tag`: a sequence tagger (BiLSTM, or BiLSTM-CRF) trained by the loop, on CoNLL-U or column files.

A step reads `batch_size` training sentences in an order shuffled per epoch (from the seed and the epoch,
so a resume continues exactly); the loss is the mean negative log-likelihood per tag (the CRF's, or the
softmax's). Contextual string embeddings of the character LMs given (`--embeddings`) are computed once
per sentence before the first step (the LMs are frozen) and kept, so a step costs no LM reading. Each
validation tags the validation sentences: its loss, token accuracy and, for span tags, conlleval's
entity F1; `best` keeps the highest accuracy (plain tags) or entity F1 (spans), the validation criterion
being 1 minus it. checkpoint.json says "task": "tag"; tokenizer.json holds the vocabularies (`TagVocab`).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, cast

import numpy as np
import torch

from charlm.checkpoint import load_for_inference
from charlm.checkpoint import store as ckpt
from charlm.data import Tokenizer
from charlm.errors import ConfigError, CorpusError
from charlm.models import RNNLanguageModel
from charlm.runtime import DistContext
from charlm.tagging import (
    Sentence,
    TagBatch,
    Tagger,
    TaggerConfig,
    TagVocab,
    check_tags,
    constraints,
    encode,
    from_internal,
    read_labelled,
    score,
    to_internal,
    training_tags,
)
from charlm.training.config import TrainConfig
from charlm.training.state import RunState
from charlm.training.task import Batch, OpenedTask

DEFAULT_LR = 2e-3
DEFAULT_BATCH = 32
DEFAULT_HIDDEN = 256
DEFAULT_WORD_EMB = 100
DEFAULT_DROPOUT = 0.33
MAX_PASSES = 40  # a run limited by time alone reads the training sentences at most this often
EMBED_BATCH = 64
# options of a language model that a tagger would ignore: named explicitly, they are refused
LM_ONLY = frozenset(
    {
        "level", "min_freq", "max_vocab", "pretokenize", "subword_vocab_size", "subword_model", "order",
        "dropout_input", "dropout_embed", "weight_drop", "tie_weights", "adaptive_softmax", "adaptive_cutoffs",
        "bptt", "bptt_jitter", "ar", "tar", "eval_streams", "eval_tokens", "sample_length", "reverse",
        "encoding_errors", "cache_dir",
    }
)  # fmt: skip


def read_sentences(paths: tuple[str, ...], column: str) -> tuple[list[Sentence], str]:
    """The sentences of the files, in order, and the first file's format."""
    out: list[Sentence] = []
    fmt = "column"
    for i, p in enumerate(paths):
        sents, f = read_labelled(p, column)
        out += sents
        fmt = f if i == 0 else fmt
    return out, fmt


def fingerprint(sentences: list[Sentence]) -> str:
    h = hashlib.sha256()
    for s in sentences:
        h.update(("\t".join(s.words) + "\n" + "\t".join(s.tags) + "\n").encode("utf-8"))
    return h.hexdigest()


def load_lms(paths: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[Tokenizer], list[RNNLanguageModel]]:
    """The character LMs of --embeddings: their options (with direction), tokenizers and networks."""
    configs, tokenizers, models = [], [], []
    for p in paths:
        model, tok, info = load_for_inference(p)
        if not isinstance(model, RNNLanguageModel) or tok.kind != "char":
            raise ConfigError(f"--embeddings {p} is not a character-level recurrent LM; train one with charlm train")
        data = info.train_config.get("data", {}) if isinstance(info.train_config.get("data"), dict) else {}
        configs.append({"model": model.config.to_dict(), "reverse": bool(data.get("reverse", False))})
        tokenizers.append(tok)
        models.append(model)
    return configs, tokenizers, models


def open_tagger(config: TrainConfig, dctx: DistContext, device: torch.device, progress: Any, info: Any) -> OpenedTask:
    """Read and check the labelled files, choose what was left open, build the tagger (see the module doc)."""
    t0 = time.perf_counter()
    if dctx.active:
        raise ConfigError("--model tag trains in one process; run it without torchrun")
    ignored = sorted(LM_ONLY & set(config.explicit_options()))
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        raise ConfigError(f"{flags} {'does' if len(ignored) == 1 else 'do'} not apply to --model tag; drop them")
    if config.model.cell not in ("lstm", "gru"):
        raise ConfigError(f"--cell {config.model.cell} does not apply to --model tag; choose lstm or gru")
    train, valid = read_data(config)
    tg = config.tagging
    lm_models: list[RNNLanguageModel] = []
    if info is not None:  # a resume: the run's own vocabulary, tags and LMs (their weights come from last)
        vocab = TagVocab.from_dict(_read_json(info.path))
        lm_configs = list(info.model_config.to_dict().get("lms", ()))
        lm_tokenizers = [Tokenizer.from_dict(d) for d in vocab.lm_tokenizers]
    else:
        lm_configs, lm_tokenizers, lm_models = load_lms(tg.embeddings)
        scheme = training_tags(train, tg.tag_scheme)
        vocab = TagVocab.build(
            [s.words for s in train], _tag_list(train, scheme), scheme=scheme, column=tg.tag_column,
            lm_tokenizers=[t.to_dict() for t in lm_tokenizers],
        )  # fmt: skip
    internal_tags(config, vocab, train, valid)
    c, chosen = choose(config, vocab, len(train))
    m = c.model
    tagger_config = TaggerConfig(
        num_words=len(vocab.words),
        num_chars=len(vocab.chars),
        num_tags=len(vocab.tags),
        word_emb=m.emb_size or DEFAULT_WORD_EMB,
        hidden_size=m.hidden_size or DEFAULT_HIDDEN,
        num_layers=m.num_layers,
        cell=m.cell,
        dropout=m.dropout if m.dropout is not None else DEFAULT_DROPOUT,
        crf=tg.crf if tg.crf is not None else vocab.scheme is not None,  # spans: a CRF; plain tags: a softmax
        lms=tuple(lm_configs),
    )
    torch.manual_seed(config.run.seed)
    cons = constraints(vocab.tags, "bioes") if tagger_config.crf and vocab.scheme is not None else None
    model = Tagger(tagger_config, cons, lm_tokenizers)
    for emb, lm in zip(model.embeddings, lm_models):
        emb.lm.load_state_dict(lm.state_dict())
    model.to(device)
    task = TagTask(c, vocab, model, train, valid, device)
    task.embed_all()
    return OpenedTask(task, c, None, "; ".join(chosen), time.perf_counter() - t0)


def read_data(config: TrainConfig) -> tuple[list[Sentence], list[Sentence]]:
    """The training and validation sentences: --valid files, or the last --valid-fraction of the sentences."""
    train, _ = read_sentences(config.data.corpus, config.tagging.tag_column)
    if config.data.valid:
        return train, read_sentences(config.data.valid, config.tagging.tag_column)[0]
    cut = max(1, int(round(len(train) * (1 - config.data.valid_fraction))))
    if cut >= len(train):
        raise ConfigError(f"{len(train)} sentence(s) leave none for validation; give --valid FILE")
    return train[:cut], train[cut:]


def internal_tags(config: TrainConfig, vocab: TagVocab, train: list[Sentence], valid: list[Sentence]) -> None:
    """Check each file's tags against the scheme, then convert them to the model's own (BIOES for spans);
    a validation tag the training data never had is a CorpusError naming its file and line."""
    check_tags(train, vocab.scheme, config.data.corpus[0])
    where = (config.data.valid or config.data.corpus)[0]
    check_tags(valid, vocab.scheme, where)
    for s in train + valid:
        s.tags = to_internal(s.tags, vocab.scheme)
        unknown = [i for i, t in enumerate(s.tags) if t not in vocab.tag_ids]
        if unknown:
            raise CorpusError(
                f"{where}:{s.lines[unknown[0]]}: tag {s.tags[unknown[0]]!r} never occurs in the training data; "
                "the tagger cannot predict it"
            )


def choose(config: TrainConfig, vocab: TagVocab, sentences: int) -> tuple[TrainConfig, list[str]]:
    """The options a tagger run leaves open (rate, batch, passes), and what was chosen, in words."""
    crf = config.tagging.crf if config.tagging.crf is not None else vocab.scheme is not None
    c, chosen = config, [f"{'CRF' if crf else 'softmax'} over {len(vocab.tags)} tags"]
    if config.optim.lr is None:
        c = c.replace(lr=DEFAULT_LR)
    if config.task.batch_size is None:
        c = c.replace(batch_size=DEFAULT_BATCH)
    epochs, max_steps, budget = config.run.limits
    if epochs is None and max_steps is None:
        c = c.replace(epochs=float(MAX_PASSES), time_budget=budget)
        chosen.append(f"at most {MAX_PASSES} passes over the {sentences:,} training sentences")
    if vocab.scheme is not None:
        chosen.append(f"{vocab.scheme.upper()} spans (trained as BIOES)")
    return c, chosen


def _read_json(path: Any) -> Any:
    import json

    return json.loads(ckpt.locate(path, "tokenizer.json").read_text(encoding="utf-8"))


def _tag_list(train: list[Sentence], scheme: str | None) -> list[str]:
    """The model's tags: O and the four BIOES tags of every span type seen, or the plain tags seen."""
    if scheme is None:
        return sorted({t for s in train for t in s.tags})
    kinds = sorted({t.split("-", 1)[1] for s in train for t in s.tags if t != "O"})
    return ["O", *(f"{p}-{k}" for k in kinds for p in "BIES")]


class TagTask:
    """Sequence labelling over labelled sentences; see the module doc."""

    def __init__(
        self,
        config: TrainConfig,
        vocab: TagVocab,
        model: Tagger,
        train: list[Sentence],
        valid: list[Sentence],
        device: torch.device,
    ) -> None:
        self.config, self.vocab, self.model, self.device = config, vocab, model, device
        self.train, self.valid = train, valid
        self.columns = len(train)
        self.fingerprint, self.valid_fingerprint = fingerprint(train), fingerprint(valid)
        self.diverged_above = 3.0 * math.log(max(2, len(vocab.tags))) + 20.0
        self.batch_size = int(config.task.batch_size or DEFAULT_BATCH)
        self.train_lm: list[torch.Tensor] | None = None
        self.valid_lm: list[torch.Tensor] | None = None
        self.embed_seconds = 0.0

    def embed_all(self) -> None:
        """The LMs' embeddings of every training and validation sentence, once (kept in half precision)."""
        if not self.model.lms:
            return
        t0 = time.perf_counter()
        self.train_lm = self._embed(self.train)
        self.valid_lm = self._embed(self.valid)
        self.embed_seconds = time.perf_counter() - t0

    def _embed(self, sentences: list[Sentence]) -> list[torch.Tensor]:
        parts = [e.embed([s.words for s in sentences], EMBED_BATCH) for e in self.model.embeddings]
        for e in self.model.embeddings:
            e._cache.clear()  # the task keeps them; the LM's own cache would hold a second copy
        return [torch.cat(row, dim=1).half() for row in zip(*parts)]

    def begin(self, writer: ckpt.RunWriter | None, train_config: dict[str, Any]) -> None:
        if writer is not None:
            writer.begin(self.model.config, self.vocab, train_config)  # type: ignore[arg-type]

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.config.run.seed, epoch]).permutation(len(self.train))

    def _batch(self, sentences: list[Sentence], lm: list[torch.Tensor] | None) -> TagBatch:
        feats = [e.float() for e in lm] if lm is not None else None
        return encode(self.vocab, [s.words for s in sentences], [s.tags for s in sentences], feats).to(self.device)

    def next_batch(self, state: RunState) -> Batch:
        idx = self._order(state.epoch)[state.pos : state.pos + self.batch_size]
        sents = [self.train[i] for i in idx]
        lm = [self.train_lm[i] for i in idx] if self.train_lm is not None else None
        b = self._batch(sents, lm)
        return Batch(b, None, int(b.mask.sum()))

    def loss(self, net: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        model = cast(Tagger, getattr(net, "module", net))  # the tagger (one process: never a DDP wrapper)
        loss = model.loss(batch.inputs)
        return loss, loss

    def advance(self, state: RunState, batch: Batch) -> None:
        state.pos += int(batch.inputs.words.size(0))
        if state.pos >= self.columns:
            state.epoch, state.pos = state.epoch + 1, 0

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        self.model.eval()
        try:
            total, count = 0.0, 0
            gold, pred = [], []
            order = sorted(range(len(self.valid)), key=lambda i: len(self.valid[i].words))
            for a in range(0, len(order), 64):
                idx = order[a : a + 64]
                sents = [self.valid[i] for i in idx]
                lm = [self.valid_lm[i] for i in idx] if self.valid_lm is not None else None
                b = self._batch(sents, lm)
                n = int(b.mask.sum())
                total += float(self.model.loss(b)) * n
                count += n
                tags, _ = self.model.decode(b)
                for s, row in zip(sents, tags.tolist()):
                    gold.append(from_internal(s.tags, self.vocab.scheme))
                    pred.append(from_internal([self.vocab.tags[t] for t in row[: len(s.words)]], self.vocab.scheme))
            figures = score(gold, pred, with_entities=self.vocab.scheme is not None)
        finally:
            self.model.train()
        out: dict[str, Any] = {"valid_loss": total / max(count, 1), "valid_accuracy": figures.accuracy}
        text = f"accuracy {100 * figures.accuracy:.2f}%"
        if figures.entities is not None:
            out |= {f"valid_{k}": figures.entities[k] for k in ("precision", "recall", "f1")}
            text += f", entity F1 {100 * float(figures.entities['f1']):.2f}"
        # best follows the error rate, not the loss: a tagger's validation loss rises (confidence) long before its
        # accuracy or F1 stops improving (WNUT-17: the lowest loss at step 250, F1 7.8; the best F1 at the end, 30.3)
        primary = float(figures.entities["f1"]) if figures.entities is not None else figures.accuracy
        out |= {"valid_criterion": 1.0 - primary, "valid_text": text}
        return out

    def sample(self) -> dict[str, str] | None:
        return None

    def baselines(self) -> dict[str, Any]:
        """Each validation word's most frequent training tag (unseen words: the most frequent tag): its accuracy."""
        t0 = time.perf_counter()
        counts: dict[str, dict[str, int]] = {}
        overall: dict[str, int] = {}
        for s in self.train:
            for w, t in zip(s.words, s.tags):
                counts.setdefault(w, {}).setdefault(t, 0)
                counts[w][t] += 1
                overall[t] = overall.get(t, 0) + 1
        top = max(overall, key=overall.__getitem__)
        best = {w: max(c, key=c.__getitem__) for w, c in counts.items()}
        right = sum(best.get(w, top) == t for s in self.valid for w, t in zip(s.words, s.tags))
        n = sum(len(s.words) for s in self.valid)
        return {"majority_accuracy": right / max(n, 1), "seconds": time.perf_counter() - t0}

    def carry(self) -> dict[str, torch.Tensor]:
        return {}

    def restore(self, tensors: dict[str, torch.Tensor], keep_carry: bool) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        c = self.model.config
        n_train = sum(len(s.words) for s in self.train)
        n_valid = sum(len(s.words) for s in self.valid)
        seen = set(self.vocab.words)
        oov = sum(w not in seen for s in self.valid for w in s.words) / max(n_valid, 1)
        lines = [
            f"  tagger: {c.summary()}, words {len(self.vocab.words):,}, characters {len(self.vocab.chars):,}, "
            f"{sum(p.numel() for p in self.model.parameters() if p.requires_grad) / 1e6:.2f}M trained parameters",
            f"  {len(self.train):,} training sentences ({n_train:,} words) / {len(self.valid):,} validation "
            f"sentences ({n_valid:,} words, {100 * oov:.1f}% unseen in training)",
        ]
        if self.model.lms:
            lines.append(f"  contextual embeddings of {len(self.model.embeddings)} char LM(s) computed in "
                         f"{self.embed_seconds:.1f}s (counted in the budget)")  # fmt: skip
        return {"model": c.to_dict(), "start_lines": lines, "warnings": []}

    def summary(self) -> dict[str, Any]:
        return {"vocab_size": len(self.vocab.words), "level": "tag"}
