"""Text classification as a task of the training loop (`charlm train DATA --model classify`).

One step reads `batch_size` labelled texts, in an order shuffled afresh each epoch from the run's seed
(so a resume continues exactly), and minimises the cross-entropy per text (softmax over labels, or one
binary cross-entropy per label for multi-label data), each text weighted by its class's weight when
`--class-weights balanced`. Validation scores every held-out text: "valid_loss" (the mean cross-entropy,
unweighted: what best, --patience and the guards follow), accuracy and macro-F1. With frozen language
models their pooled features never change, so they are read once for every text (`pooled`) and each
step trains the head alone.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charlm.checkpoint import META_FILE
from charlm.checkpoint import store as ckpt
from charlm.classify import ClassifierVocab, Example, naive_bayes, predict_probabilities, score
from charlm.fileio import atomic_write_json
from charlm.models import ClassifierInput, TextClassifier
from charlm.training.config import TrainConfig
from charlm.training.state import RunState
from charlm.training.task import Batch

TASK = "classify"  # checkpoint.json's top-level "task": what `charlm.load` and `charlm evaluate` dispatch on
FEATURE_BATCH = 128  # texts per pass when frozen language models' features are read once
BUCKET = 50  # batches sorted by length together (see ClassifyTask.order)


def examples_fingerprint(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(e.text.encode("utf-8") + b"\t" + "\x1f".join(e.labels).encode("utf-8") + b"\n")
    return h.hexdigest()


def class_weights(vocab: ClassifierVocab, train: Sequence[Example], multi_label: bool) -> torch.Tensor:
    """'balanced' weights, N / (K x count) per class (scikit-learn's rule); a class never seen gets 1."""
    k = len(vocab.labels)
    counts = np.zeros(k)
    for e in train:
        for x in e.labels if multi_label else e.labels[:1]:
            counts[vocab.label_index[x]] += 1
    total = counts.sum()
    return torch.tensor(np.where(counts > 0, total / (k * np.maximum(counts, 1)), 1.0), dtype=torch.float32)


@torch.no_grad()
def pooled_features(model: TextClassifier, vocab: ClassifierVocab, texts: Sequence[str]) -> torch.Tensor:
    """(N, F) the frozen language models' pooled features of `texts`, read as batches of about one length."""
    device = next(model.parameters()).device
    order = np.argsort(vocab.lengths(texts), kind="stable")
    out = torch.zeros(len(texts), model.feature_size)
    model.eval()
    for start in range(0, len(texts), FEATURE_BATCH):
        rows = order[start : start + FEATURE_BATCH]
        out[torch.from_numpy(rows)] = model.encode(vocab.encode([texts[i] for i in rows]).to(device)).float().cpu()
    model.train()
    return out


class ClassifyTask:
    """Training a `TextClassifier` on labelled texts; see the module doc."""

    def __init__(
        self,
        config: TrainConfig,
        model: TextClassifier,
        vocab: ClassifierVocab,
        train: Sequence[Example],
        valid: Sequence[Example],
        device: torch.device,
        describe: dict[str, Any],
    ) -> None:
        self.config, self.vocab, self.device = config, vocab, device
        self.model = model.to(device)
        self.train_examples, self.valid_examples = list(train), list(valid)
        self.multi_label = model.config.multi_label
        self.targets = vocab.label_targets([e.labels for e in train], self.multi_label)
        weighted = config.classify.class_weights == "balanced"
        self.weights = class_weights(vocab, train, self.multi_label).to(device) if weighted else None
        self.columns = len(self.train_examples)
        self.lengths = torch.tensor(vocab.lengths([e.text for e in self.train_examples]))
        self.fingerprint = examples_fingerprint(self.train_examples)
        self.valid_fingerprint = examples_fingerprint(self.valid_examples)
        self.diverged_above = 10.0 + 3.0 * math.log(max(2, len(vocab.labels)))
        self.batch_size = int(config.task.batch_size or 32)
        self.frozen_lm = model.config.encoder == "lm" and not model.config.finetune
        self.train_pooled: torch.Tensor | None = None
        self.valid_pooled: torch.Tensor | None = None
        self._describe = describe
        self._order: tuple[int, torch.Tensor] | None = None
        self.train_ngram_logits: torch.Tensor | None = None  # (N, K) naive Bayes, cross-fitted

    def stack_naive_bayes(self, fit_new: bool) -> None:
        """Naive Bayes on every training text into the model (a new run; a resume has it in its weights), and
        the cross-fitted scores training steps read (`charlm.classify.naive_bayes`)."""
        sets = self.vocab.ngram_sets([e.text for e in self.train_examples])
        targets = self.vocab.label_targets([e.labels for e in self.train_examples], True).numpy()
        size, multi = len(self.vocab.ngrams), self.multi_label
        if fit_new:
            weights, bias = naive_bayes.fit_table(sets, targets, size, multi)
            with torch.no_grad():
                self.model.ngram_weight.copy_(weights)
                self.model.ngram_bias.copy_(bias)
        self.train_ngram_logits = naive_bayes.cross_fitted(sets, targets, size, multi, self.config.run.seed)

    def read_features(self) -> None:
        """Frozen language models: read every text once, at the first step or validation (after a resume has
        put the run's weights back); the time counts against the run's budget like any step."""
        if self.frozen_lm and self.train_pooled is None:
            self.train_pooled = pooled_features(self.model, self.vocab, [e.text for e in self.train_examples])
            self.valid_pooled = pooled_features(self.model, self.vocab, [e.text for e in self.valid_examples])

    def begin(self, writer: ckpt.RunWriter | None, train_config: dict[str, Any]) -> None:
        if writer is None:
            return
        writer.begin(self.model.config, self.vocab, train_config)  # type: ignore[arg-type]  # a vocabulary, not a tokenizer
        meta_path = writer.path / META_FILE
        meta = ckpt.open_checkpoint(writer.path).meta
        atomic_write_json(meta_path, dict(meta, task=TASK))  # what charlm.load dispatches on

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's order of the training texts, drawn from the run's seed and the epoch: shuffled, then
        each run of BUCKET batches sorted by length and cut into batches, whose order is shuffled again. A
        batch holds texts of about one length (little padding to read), and still a random draw of them."""
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.config.run.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.columns, generator=g)
            span = self.batch_size * BUCKET
            runs = [perm[s : s + span] for s in range(0, self.columns, span)]
            batches = [b for r in runs for b in r[torch.argsort(self.lengths[r], stable=True)].split(self.batch_size)]
            shuffled = torch.randperm(len(batches), generator=g).tolist()
            self._order = (epoch, torch.cat([batches[i] for i in shuffled]))
        return self._order[1]

    def next_batch(self, state: RunState) -> Batch:
        self.read_features()
        rows = self.order(state.epoch)[state.pos : state.pos + self.batch_size]
        if self.train_pooled is not None:
            inputs = ClassifierInput(torch.zeros(len(rows), dtype=torch.int64), pooled=self.train_pooled[rows])
        else:
            inputs = self.vocab.encode([self.train_examples[i].text for i in rows.tolist()])
        if self.train_ngram_logits is not None:  # what naive Bayes makes of texts it was not fitted on
            inputs.ngram_ids, inputs.ngram_offsets = None, None
            inputs.ngram_logits = self.train_ngram_logits[rows]
        return Batch(inputs.to(self.device), self.targets[rows].to(self.device), len(rows))

    def loss(self, net: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = net(batch.inputs).float()  # (B, K)
        if self.multi_label:
            per = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")  # (B, K)
            loss = (per * self.weights if self.weights is not None else per).sum(1).mean()
        else:
            loss = F.cross_entropy(logits, batch.targets, weight=self.weights)
        return loss, loss

    def advance(self, state: RunState, batch: Batch) -> None:
        state.pos += batch.size
        if state.pos >= self.columns:
            state.epoch, state.pos = state.epoch + 1, 0

    def validate(self) -> dict[str, Any]:
        self.read_features()
        if self.valid_pooled is not None:
            self.model.eval()
            with torch.inference_mode():
                texts = [e.text for e in self.valid_examples]
                batch = self.vocab.with_ngrams(ClassifierInput(torch.zeros(len(texts))), texts).to(self.device)
                logits = self.model.head(self.valid_pooled.to(self.device), batch)
                probs = self.model.probabilities(logits).float().cpu().numpy()
            self.model.train()
        else:
            probs = predict_probabilities(self.model, self.vocab, [e.text for e in self.valid_examples])
        r = score(probs, self.valid_examples, self.vocab, self.multi_label)
        return {
            "valid_loss": r.loss,
            "valid_accuracy": r.accuracy,
            "valid_macro_f1": r.macro_f1,
            "valid_micro_f1": r.micro_f1,
            "valid_examples": r.examples,
        }

    def sample(self) -> dict[str, str] | None:
        return None

    def baselines(self) -> dict[str, Any]:
        """Always answering the most frequent training label, with the training labels' frequencies as its
        probabilities: what a classifier that learnt nothing from the texts scores."""
        t0 = time.perf_counter()
        k = len(self.vocab.labels)
        if self.multi_label:
            prior = self.targets.float().mean(0).clamp(1e-4, 1 - 1e-4).numpy()
        else:
            prior = (np.bincount(self.targets.numpy(), minlength=k) + 1.0) / (len(self.targets) + k)
        probs = np.tile(prior, (len(self.valid_examples), 1)).astype(np.float32)
        r = score(probs, self.valid_examples, self.vocab, self.multi_label)
        label = self.vocab.labels[int(np.argmax(prior))]
        figures = {"label": label, "loss": r.loss, "accuracy": r.accuracy, "macro_f1": r.macro_f1}
        return {"majority": figures, "seconds": time.perf_counter() - t0}

    def carry(self) -> dict[str, torch.Tensor]:
        return {}

    def restore(self, tensors: dict[str, torch.Tensor], keep_carry: bool) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return self._describe

    def summary(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab.vocab_size, "level": TASK, "loss_unit": "text", "rate_unit": "texts"}
