"""The interactive loop of `charlm generate --interactive`: a line is a prompt or a /command."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from charlm.api import LanguageModel
from charlm.cli.common import err_console
from charlm.cli.lineinput import LineHistory, read_entry
from charlm.cli.terminal import error, note, print_results, stats, unescape, warn, write
from charlm.errors import CharlmError, ConfigError
from charlm.fileio import atomic_write_bytes
from charlm.models import State
from charlm.sampling import DecodeBatch, DecodingOptions, Prompt, derived_seed, describe_unknown, warm_up

_HELP = r"""Type a prompt and press Enter; the continuation streams back. Ctrl-C stops it; Ctrl-D or /quit leaves.
  /temperature T     sampling temperature (0 = greedy)
  /top-k K|off       draw only from the K most likely tokens
  /top-p P|off       draw from the fewest tokens holding probability P
  /greedy  /sample   switch strategy
  /beam W|off        beam search with width W (off: back to sampling)
  /length-penalty A  beam score = sum(log p) / length^A
  /n-best N          beam hypotheses to show
  /samples N         samples per prompt, as one batch
  /length N          most new tokens
  /stop TEXT|off     end each text before TEXT (\n understood)
  /repetition-penalty R   generated tokens: positive logits / R, negative * R (1 = off)
  /presence-penalty P     logit -= P for each token generated at least once (0 = off)
  /frequency-penalty F    logit -= F x times the token was generated (0 = off)
  /no-repeat-ngram N|off  never generate the same N tokens twice
  /min-p P|off            sampling: only tokens at least P x as likely as the top one
  /typical-p P|off        sampling: locally typical sampling with mass P
  /min-new-tokens N       nothing ends the text before N tokens (0 = off)
  /ban TEXT|off           never generate TEXT (repeat to add more; off clears)
  /lines N|off       stop after N line ends
  /seed S            re-seed the random generator
  /continue          go on from where the last text stopped (its state carried)
  /score TEXT        the model's log-probability of TEXT (per token, perplexity)
  /save FILE         write the session's text so far (prompts and continuations) to FILE
  /settings          show the settings
  /reset             back to the settings and seed the session started with
  /help  /quit
A line ending with \ goes on on the next line; a line of three double quotes starts and ends a block.
A line starting with // sends a prompt that starts with /. Arrow keys edit the line and walk the
history, kept in the history file across sessions (CHARLM_HISTORY, default ~/.local/state/charlm/history)."""

_QUIT = object()
_CONTROLS = (
    "repetition-penalty",
    "presence-penalty",
    "frequency-penalty",
    "no-repeat-ngram",
    "min-p",
    "typical-p",
    "min-new-tokens",
    "ban",
)


def _controls_on(o: DecodingOptions) -> list[tuple[str, Any]]:
    """The history controls away from their neutral values, for the settings line."""
    on = [
        ("repetition-penalty", o.repetition_penalty if o.repetition_penalty != 1.0 else None),
        ("presence-penalty", o.presence_penalty or None),
        ("frequency-penalty", o.frequency_penalty or None),
        ("no-repeat-ngram", o.no_repeat_ngram_size),
        ("min-new-tokens", o.min_new_tokens or None),
    ]
    shown = [(name, f"{value:g}") for name, value in on if value is not None]
    return shown + ([("ban", ", ".join(map(repr, o.ban)))] if o.ban else [])


def _int_or_off(value: str) -> int | None:
    return None if value.lower() in ("off", "none") else int(value)


def _float_or_off(value: str) -> float | None:
    return None if value.lower() in ("off", "none") else float(value)


class Repl:
    """The interactive loop: a line is a prompt or a /command; settings persist between prompts."""

    def __init__(self, lm: LanguageModel, options: DecodingOptions, seed: int) -> None:
        self.lm = lm
        self.options, self.seed = options, seed
        self._start = (options, seed)
        self._turn = 0  # prompts since the last (re)seed: see _next_seed
        self.exchanges: list[str] = []  # the session's text: each prompt with its continuation(s)
        self._carry: tuple[torch.Tensor, State] | None = None  # logits and state after the last exchange
        self._commands: dict[str, Callable[[str], Any]] = {
            "temperature": lambda v: self._set(temperature=float(v)),
            "top-k": lambda v: self._set(top_k=_int_or_off(v)),
            "top-p": lambda v: self._set(top_p=_float_or_off(v)),
            "greedy": lambda v: self._set(strategy="greedy", num_samples=1, min_p=None, typical_p=None),
            "sample": lambda v: self._set(strategy="sample", temperature=self.options.temperature or 1.0),
            "beam": self._beam,
            "length-penalty": lambda v: self._set(length_penalty=float(v)),
            "n-best": lambda v: self._set(n_best=_int_or_off(v)),
            "samples": lambda v: self._set(num_samples=int(v)),
            "length": lambda v: self._set(max_new_tokens=int(v)),
            "stop": lambda v: self._set(stop=() if v.lower() in ("off", "none") else (unescape(v),)),
            "lines": lambda v: self._set(lines=_int_or_off(v)),
            "repetition-penalty": lambda v: self._set(repetition_penalty=float(v)),
            "presence-penalty": lambda v: self._set(presence_penalty=float(v)),
            "frequency-penalty": lambda v: self._set(frequency_penalty=float(v)),
            "no-repeat-ngram": lambda v: self._set(no_repeat_ngram_size=_int_or_off(v)),
            "min-p": lambda v: self._set(min_p=_float_or_off(v)),
            "typical-p": lambda v: self._set(typical_p=_float_or_off(v)),
            "min-new-tokens": lambda v: self._set(min_new_tokens=int(v)),
            "ban": lambda v: self._set(ban=() if v.lower() in ("off", "none") else (*self.options.ban, unescape(v))),
            "seed": self._reseed,
            "continue": self._continue,
            "score": self._score,
            "save": self._save,
            "settings": lambda v: self.show(),
            "reset": self._reset,
            "help": lambda v: err_console.print(_HELP, markup=False, highlight=False, soft_wrap=True),
            "quit": lambda v: _QUIT,
            "exit": lambda v: _QUIT,
        }
        self._needs_value = {
            "temperature",
            "top-k",
            "top-p",
            "beam",
            "length-penalty",
            "n-best",
            "samples",
            "length",
            "stop",
            "lines",
            "seed",
            "score",
            "save",
            *_CONTROLS,
        }

    def settings_line(self) -> str:
        o = self.options
        s = o.effective_strategy
        parts = [f"strategy {s}"]
        if s == "sample":
            parts += [
                f"temperature {o.temperature:g}",
                f"top-k {o.top_k or 'off'}",
                f"top-p {o.top_p or 'off'}",
                f"min-p {o.min_p or 'off'}",
                f"typical-p {o.typical_p or 'off'}",
                f"samples {o.num_samples}",
            ]
        elif s == "beam":
            parts += [
                f"beam width {o.beam_width}",
                f"length-penalty {o.length_penalty:g}",
                f"n-best {o.n_best or o.beam_width}",
            ]
        parts += [f"{name} {value}" for name, value in _controls_on(o)]
        parts += [
            f"length {o.max_new_tokens}",
            f"stop {', '.join(map(repr, o.stop)) or 'off'}",
            f"lines {o.lines or 'off'}",
            f"seed {self.seed}",
        ]
        return " · ".join(parts)

    def show(self) -> None:
        note(self.settings_line())

    def _set(self, **changes: Any) -> None:
        self.options = self.lm.decoding(self.options, **changes)
        self.show()

    def _beam(self, value: str) -> None:
        if value.lower() == "off":
            self._set(strategy="sample", temperature=self.options.temperature or 1.0)
            return
        width = int(value)
        n_best = self.options.n_best if self.options.n_best is not None and self.options.n_best <= width else None
        self._set(strategy="beam", beam_width=width, n_best=n_best, num_samples=1, min_p=None, typical_p=None)

    def _reseed(self, value: str) -> None:
        seed = int(value)
        self.lm.generator(seed)  # checked before anything changes: a bad seed leaves the old one
        self.seed, self._turn = seed, 0
        self.show()

    def _reset(self, value: str) -> None:
        self.options, self.seed = self._start
        self._turn = 0
        self.show()

    def _next_seed(self) -> int:
        """The seed of the next prompt: the session's seed for the first prompt after it is set (the text
        `charlm generate --seed S` gives), then seeds derived from it, one per prompt, so the session goes on."""
        turn, self._turn = self._turn, self._turn + 1
        return self.seed if turn == 0 else derived_seed(self.seed, turn)

    def command(self, line: str) -> Any:
        """Run one /command; a ConfigError (or a bad number) leaves the settings as they were."""
        name, _, value = line[1:].strip().partition(" ")
        name, value = name.lower(), value.strip()
        handler = self._commands.get(name)
        if handler is None:
            raise ConfigError(f"unknown command /{name}; type /help for the list")
        if name in self._needs_value and not value:
            raise ConfigError(f"/{name} needs a value, e.g. {_EXAMPLES.get(name, '/' + name + ' 1')}")
        try:
            return handler(value)
        except ValueError:
            raise ConfigError(
                f"/{name}: {value!r} is not a number; e.g. {_EXAMPLES.get(name, '/' + name + ' 1')}"
            ) from None

    def run(self, first: str | None = None, read: Callable[[str], str] | None = None) -> None:
        """Until Ctrl-D, /quit or the end of piped input. Ctrl-C stops the current continuation only."""
        tty = sys.stdin.isatty()
        history = LineHistory.open() if tty and read is None else None
        reader = read or input
        note("charlm interactive: type a prompt, /help for commands, Ctrl-D or /quit to leave", style="bold")
        self.show()
        pending = [first] if first else []
        try:
            while True:
                try:
                    line = pending.pop() if pending else read_entry(reader, tty)
                except EOFError:
                    if tty:
                        write("\n")
                    return
                except KeyboardInterrupt:
                    write("\n")
                    note("(Ctrl-D or /quit to leave)")
                    continue
                if self.handle(line) is _QUIT:
                    return
        finally:
            if history is not None:
                history.save()

    def handle(self, line: str) -> Any:
        """One entry: a /command, or a prompt to continue."""
        if line.startswith("/") and not line.startswith("//"):
            try:
                return self.command(line)
            except CharlmError as exc:
                error(str(exc))
            return None
        if line.startswith("//"):
            line = line[1:]
        if not line.strip():
            return None
        self._generate(line, None)
        return None

    def _generate(self, prompt: str, start: tuple[torch.Tensor, State] | None) -> None:
        """Continue `prompt` (a new exchange), or with `start` the last exchange (its state carried)."""
        o = self.options
        seed = self._next_seed()
        try:
            if o.effective_strategy == "beam" or o.num_samples > 1:
                text = self.exchanges[-1] if start is not None else prompt
                began = time.perf_counter()
                found = self.lm.generate(text, o, seed=seed)
                print_results(found, "", time.perf_counter() - began)
                self._record(prompt, found.text if found else "", None, start is not None)
                return
            self._stream_row(prompt, seed, start)
        except KeyboardInterrupt:
            write("\n")
            note("[stopped]")
            self._carry = None  # the state of a stopped text is not kept: /continue reads the text again
        except CharlmError as exc:
            error(str(exc))

    def _stream_row(self, prompt: str, seed: int, start: tuple[torch.Tensor, State] | None) -> None:
        lm, o = self.lm, self.options
        batch = DecodeBatch(lm.model, lm.tokenizer, max_rows=1)
        if start is None:
            p = lm.prompt(prompt)
            if p.unknown:
                warn(describe_unknown(lm.tokenizer, p) or "")
        else:  # the text decoder needs the last ids as context only; the state carries the rest
            p = Prompt("", tuple(lm.tokenizer.encode(self.exchanges[-1][-64:])) or (0,))
        row = batch.add(p, o, seed, start=start, keep_state=True)
        began = time.perf_counter()
        shown: list[str] = []
        self._carry = None
        if start is None:
            self.exchanges.append(prompt)
        try:
            while len(batch):
                for event in batch.step():
                    if event.piece:
                        write(event.piece)
                        shown.append(event.piece)
                    if event.done and event.result is not None:
                        self._carry = event.carry
                        self.exchanges[-1] += event.result.text
                        if not event.result.text.endswith("\n"):
                            write("\n")  # the next output starts on its own line
                        stats(event.result.num_tokens, time.perf_counter() - began, event.result)
        except KeyboardInterrupt:
            batch.cancel(row)
            self.exchanges[-1] += "".join(shown)  # what was printed stays the session's text
            raise

    def _record(self, prompt: str, text: str, carry: tuple[torch.Tensor, State] | None, cont: bool) -> None:
        if cont:
            self.exchanges[-1] += text
        else:
            self.exchanges.append(prompt + text)
        self._carry = carry

    def _continue(self, value: str) -> None:
        if not self.exchanges:
            raise ConfigError("nothing to continue yet; type a prompt first")
        if self._carry is None:  # after beam search, several samples or Ctrl-C: read the text again
            warm = warm_up(self.lm.model, self.lm.prompt(self.exchanges[-1]).ids)
            self._generate("", warm)
        else:
            self._generate("", self._carry)

    def _score(self, value: str) -> None:
        text = unescape(value)
        s = self.lm.score(text)
        if s.unknown:
            shown = ", ".join(map(repr, s.unknown))
            warn(f"{len(s.unknown)} unit(s) outside the vocabulary ({shown}), scored as <unk>")
        note(
            f"log-prob {s.logprob:.3f} · {len(s.logprobs)} tokens · mean {s.mean:.4f} per token · "
            f"perplexity {s.perplexity:.3f}"
        )

    def _save(self, value: str) -> None:
        path = Path(value).expanduser()
        if not self.exchanges:
            raise ConfigError("nothing to save yet; type a prompt first")
        if path.exists():
            raise ConfigError(f"{path} exists; /save to a new file name (nothing was written)")
        text = "".join(e if e.endswith("\n") else e + "\n" for e in self.exchanges)  # each on its own lines
        atomic_write_bytes(path, text.encode("utf-8"))
        note(f"saved {len(text):,} characters to {path}")


_EXAMPLES = {
    "temperature": "/temperature 0.7",
    "top-k": "/top-k 20 or /top-k off",
    "top-p": "/top-p 0.9 or /top-p off",
    "beam": "/beam 5 or /beam off",
    "length-penalty": "/length-penalty 0.6",
    "n-best": "/n-best 3",
    "samples": "/samples 3",
    "length": "/length 300",
    "stop": r"/stop \n or /stop off",
    "lines": "/lines 2 or /lines off",
    "seed": "/seed 1",
    "score": "/score To be, or not to be",
    "save": "/save session.txt",
    "repetition-penalty": "/repetition-penalty 1.2",
    "presence-penalty": "/presence-penalty 0.5",
    "frequency-penalty": "/frequency-penalty 0.5",
    "no-repeat-ngram": "/no-repeat-ngram 4 or /no-repeat-ngram off",
    "min-p": "/min-p 0.05 or /min-p off",
    "typical-p": "/typical-p 0.9 or /typical-p off",
    "min-new-tokens": "/min-new-tokens 50",
    "ban": "/ban thou or /ban off",
}
