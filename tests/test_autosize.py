"""Choosing the options a user left to charlm: width from the budget and the machine, dropout from the epochs."""

from __future__ import annotations

import pytest

from charlm.training import autosize
from charlm.training.config import TrainConfig


def speeds(table: dict[int, float]):
    """A scripted machine: tokens/s of each width; records which widths were measured."""
    measured: list[int] = []

    def measure(config_or_width):
        width = config_or_width if isinstance(config_or_width, int) else config_or_width.model.hidden_size
        measured.append(width)
        return table[width]

    return measure, measured


def test_the_widest_width_that_still_gets_enough_steps_is_chosen():
    # 16 x 100 tokens a step; 1,500 steps in 100 s need 24,000 tokens/s
    measure, measured = speeds({128: 90_000, 192: 50_000, 256: 30_000, 384: 20_000, 512: 9_000})
    assert autosize.choose_width(measure, 100.0, 1600) == (256, 30_000)
    assert measured == [128, 192, 256, 384]  # it stops at the first width that falls short
    measure, _ = speeds({128: 10.0, 192: 5.0})
    assert autosize.choose_width(measure, 100.0, 1600)[0] == 128  # a very slow machine still gets the smallest


def test_a_faster_machine_or_a_longer_budget_gets_a_wider_model():
    table = {w: 4e9 / w**2 for w in autosize.WIDTHS}
    widths = [autosize.choose_width(speeds(table)[0], budget, 1600)[0] for budget in (60, 180, 600, 3600)]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    fast = {w: 4 * s for w, s in table.items()}
    assert autosize.choose_width(speeds(fast)[0], 60, 1600)[0] > widths[0]


@pytest.mark.parametrize("epochs, expected", [(0.5, 0.0), (2.9, 0.0), (3.0, 0.1), (5.9, 0.1), (6.0, 0.2), (40, 0.2)])
def test_dropout_follows_the_passes_over_the_text(epochs, expected):
    assert autosize.dropout_for_epochs(epochs) == expected


def test_resolve_fills_only_what_was_left_open(monkeypatch):
    measure, measured = speeds(dict.fromkeys(autosize.WIDTHS, 1e9))
    c = TrainConfig.from_options(corpus=("x",), hidden_size=100, dropout=0.3, batch_size=7, lr=1e-3, time_budget=60)
    choice = autosize.resolve(c, 10**6, "cpu", measure)
    assert choice.config == c.with_level_defaults() and measured == [] and choice.reason == ""


def test_resolve_with_a_budget_measures_and_says_why():
    table = {128: 60_000, 192: 40_000, 256: 30_000, 384: 10_000}
    measure, measured = speeds(table)
    choice = autosize.resolve(TrainConfig.from_options(corpus=("x",), time_budget=100), 1_000_000, "cpu", measure)
    c = choice.config
    assert (c.model.hidden_size, c.task.batch_size, c.optim.lr) == (256, 16, autosize.LR)
    assert c.model.dropout == 0.1  # 30,000 tokens/s x 100 s = 3.0M tokens: 3 passes over 1.0M
    assert measured == [128, 192, 256, 384]  # the speed found while choosing serves the dropout too
    assert "2x256" in choice.reason and "dropout" in choice.reason and c.resolved


def test_resolve_without_a_budget_sizes_by_the_corpus_and_measures_nothing():
    measure, measured = speeds({})
    small = autosize.resolve(TrainConfig.from_options(corpus=("x",), max_steps=100), 100_000, "cpu", measure).config
    big = autosize.resolve(TrainConfig.from_options(corpus=("x",), epochs=1.0), 100_000_000, "cuda", measure).config
    assert small.model.hidden_size < big.model.hidden_size and measured == []
    assert small.task.batch_size == 16 and big.task.batch_size == 64
    assert big.model.dropout == 0.0  # one pass over the text


def test_bf16_is_used_only_when_measured_enough_faster():
    gain = autosize.BF16_MIN_GAIN
    assert autosize.faster_precision({"fp32": 1000.0, "bf16": 1000.0 * gain}.__getitem__) == ("bf16", 1000.0 * gain)
    assert autosize.faster_precision({"fp32": 1000.0, "bf16": 999.0 * gain}.__getitem__) == ("fp32", 1000.0)


def test_auto_precision_is_measured_per_width_and_the_width_uses_the_faster(monkeypatch):
    # bf16 doubles the speed of wide models only: with it, 384 reaches 1,500 steps in 100 s (24,000 tok/s needed)
    table = {("fp32", 128): 90_000, ("bf16", 128): 80_000, ("fp32", 256): 30_000, ("bf16", 256): 35_000,
             ("fp32", 384): 14_000, ("bf16", 384): 28_000, ("fp32", 512): 8_000, ("bf16", 512): 16_000}  # fmt: skip
    seen = []

    def measure(c):
        seen.append((c.run.precision, c.model.hidden_size))
        return table[(c.run.precision, c.model.hidden_size)]

    monkeypatch.setattr(autosize, "WIDTHS", (128, 256, 384, 512))
    config = TrainConfig.from_options(corpus=("x",), time_budget=100.0, batch_size=16)
    choice = autosize.resolve(config, 10_000_000, "cpu", measure, bf16=True)
    assert (choice.config.model.hidden_size, choice.precision) == (384, "bf16")
    assert "bf16" in choice.reason
    assert choice.config.run.precision == "auto"  # a resume elsewhere decides again
    assert all(p in ("fp32", "bf16") for p, _ in seen)
    seen.clear()
    plain = autosize.resolve(config, 10_000_000, "cpu", measure, bf16=False)
    assert plain.precision is None and plain.config.model.hidden_size == 256
    assert {p for p, _ in seen} == {"fp32"}  # without bf16, auto is measured as fp32
    explicit = autosize.resolve(TrainConfig.from_options(corpus=("x",), hidden_size=512, time_budget=100.0), 1, "cpu",
                                measure, bf16=True)  # fmt: skip
    assert explicit.precision == "bf16" and explicit.config.model.hidden_size == 512


def test_a_resume_keeps_the_precision_the_run_trained_in_without_measuring(monkeypatch):
    """Re-measuring on resume could flip fp32/bf16 on noise and break resume == one long run."""
    import torch

    from charlm.training import speed

    monkeypatch.setattr(speed, "resolve_precision", lambda name, device, cell: name)
    resolved = TrainConfig.from_options(corpus=("x",), hidden_size=8, dropout=0.0, batch_size=2, lr=1e-3)
    cpu = torch.device("cpu")
    for candidate, kept, expected in [(True, "bf16", "bf16"), (True, "fp32", "auto"), (False, "bf16", "auto")]:
        monkeypatch.setattr(speed, "cpu_bf16_candidate", lambda cell, c=candidate: c)
        config, why, seconds, precision = speed.choose(resolved, None, cpu, None, kept)  # type: ignore[arg-type]
        assert (precision, why, seconds) == (expected, "", 0.0)  # auto without bf16 is fp32 on a CPU


def test_char_level_keeps_its_measured_defaults():
    c = autosize.resolve(TrainConfig.from_options(corpus=("x",), max_steps=100), 100_000, "cpu", speeds({})[0]).config
    assert (c.model.emb_size, c.task.bptt, c.model.tie_weights, c.model.adaptive_softmax) == (64, 100, False, False)
    assert (c.model.dropout_input, c.model.dropout_embed, c.model.weight_drop, c.task.ar, c.task.tar) == (
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    )


def test_word_level_defaults_tie_a_hidden_wide_embedding_and_regularise_by_passes():
    table = {128: 60_000, 192: 40_000, 256: 30_000, 384: 10_000, 512: 1_000}
    measure, measured = speeds(table)
    word = TrainConfig.from_options(corpus=("x",), level="word", time_budget=100)
    choice = autosize.resolve(word, 200_000, "cpu", measure)
    c = choice.config
    assert c.resolved and (c.model.emb_size, c.model.tie_weights, c.task.bptt, c.optim.lr) == (
        c.model.hidden_size,
        True,
        50,
        autosize.WORD_LR,
    )
    passes = 100 * table[c.model.hidden_size] / 200_000
    assert passes > 5 and c.model.dropout == autosize.word_regularisers(passes)["dropout"] > 0.3
    assert c.model.weight_drop > 0 and c.model.dropout_embed > 0 and c.task.ar > 0
    assert "embedding" in choice.reason and "weight drop" in choice.reason
    few = autosize.resolve(word.replace(time_budget=1), 200_000, "cpu", speeds(table)[0]).config
    assert few.model.dropout < c.model.dropout and few.model.weight_drop == 0.0  # under one pass: light regularisation
    mine = autosize.resolve(word.replace(emb_size=100, dropout=0.5, bptt=35), 200_000, "cpu", measure).config
    assert (mine.model.emb_size, mine.model.dropout, mine.task.bptt) == (100, 0.5, 35)  # explicit options win
    untied = autosize.resolve(word.replace(tie_weights=False), 200_000, "cpu", measure).config
    assert untied.resolved and untied.model.emb_size == untied.model.hidden_size and untied.model.tie_weights is False


def _bf16_table(monkeypatch):
    """bf16 doubles the speed of wide models; with it 384 reaches 1,500 steps in 100 s, without it 256 does."""
    table = {("fp32", 128): 90_000, ("bf16", 128): 80_000, ("fp32", 256): 30_000, ("bf16", 256): 35_000,
             ("fp32", 384): 14_000, ("bf16", 384): 28_000, ("fp32", 512): 8_000, ("bf16", 512): 16_000}  # fmt: skip
    monkeypatch.setattr(autosize, "WIDTHS", (128, 256, 384, 512))
    return lambda c: table[(c.run.precision, c.model.hidden_size)]


@pytest.mark.parametrize("bf16_gap, expected", [(0.0, (384, "bf16")), (0.01, (384, "bf16")), (0.5, (256, "fp32"))])
def test_bf16_is_kept_only_where_it_learns_as_fp32_does(monkeypatch, bf16_gap, expected):
    """Faster is not enough: a bf16 that learns worse in the paired trial gives way to fp32, and the width
    is then the one fp32's speed allows (issue 21: a 2x1024 bf16 char model at 3.36 nats/char vs fp32's 1.75)."""
    measure = _bf16_table(monkeypatch)
    trials = []

    def learns(c):
        trials.append(c.model.hidden_size)
        fp32 = [3.0 - 0.05 * i for i in range(autosize.BF16_CHECK_STEPS)]
        return {"fp32": fp32, "bf16": [fp32[0], *[v + bf16_gap for v in fp32[1:]]]}  # one start

    config = TrainConfig.from_options(corpus=("x",), time_budget=100.0, batch_size=16)
    choice = autosize.resolve(config, 10_000_000, "cpu", measure, bf16=True, learns=learns)
    assert (choice.config.model.hidden_size, choice.precision) == expected
    assert trials == [384]  # one trial, of the width bf16's speed chose
    monkeypatch.setattr(autosize, "BF16_MAX_WIDTH", 256)  # above it, bf16 is neither measured nor tried
    capped = autosize.resolve(config, 10_000_000, "cpu", measure, bf16=True, learns=learns)
    assert (capped.config.model.hidden_size, capped.precision) == (256, "fp32" if bf16_gap == 0.5 else "bf16")
    assert ("learns worse" in choice.reason) == (expected[1] == "fp32")
    fp32 = [3.0, 2.5, 2.0, 2.0, 2.0, 2.0]  # progress: 1.0
    just = 1.0 - (autosize.BF16_KEEP - autosize.BF16_LOSS_SLACK)  # bf16 ends here at the least progress allowed
    assert autosize.bf16_learns({"fp32": fp32, "bf16": [3.0, 2.5, *[2.0 + just - 0.001] * 4]})
    assert not autosize.bf16_learns({"fp32": fp32, "bf16": [3.0, 2.5, *[2.0 + just + 0.01] * 4]})


def test_validation_time_counts_against_the_steps_the_budget_promises():
    # 16 x 100 tokens a step: 1,500 steps in 100 s need 24,000 tokens/s without validation
    table = {128: 90_000, 192: 50_000, 256: 30_000, 384: 20_000, 512: 9_000}
    config = TrainConfig.from_options(corpus=("x",), time_budget=100, eval_tokens=0)  # validation scores the whole text
    alone = autosize.resolve(config, 10**7, "cpu", speeds(table)[0])
    # a validation text that takes as long to score as 250 steps take to train
    heavy = int(250 * 1600 * autosize.EVAL_SPEEDUP)
    busy = autosize.resolve(config, 10**7, "cpu", speeds(table)[0], valid_tokens=heavy)
    assert (
        alone.config.model.hidden_size == 256 and busy.config.model.hidden_size == 192
    )  # 2 x 1,600 tokens a step: 48k/s
    assert autosize.step_tokens(1600, heavy, 250) == 3200


@pytest.mark.parametrize("level", ["word", "subword"])
def test_a_small_text_gets_a_narrower_model_whatever_the_machine(level):
    fast = dict.fromkeys(autosize.WIDTHS, 1e9)  # a machine fast enough for any width
    widths = []
    for tokens in (50_000, 200_000, 1_000_000, 10_000_000):
        c = autosize.resolve(
            TrainConfig.from_options(corpus=("x",), level=level, time_budget=600), tokens, "cpu", speeds(fast)[0]
        )
        widths.append(c.config.model.hidden_size)
        assert c.config.model.hidden_size <= autosize.max_width(level, tokens)
        assert f"at most {c.config.model.hidden_size}" in c.reason
    assert widths == sorted(widths) and widths[0] < widths[-1] == max(autosize.WIDTHS)
    char = [autosize.resolve(TrainConfig.from_options(corpus=("x",), time_budget=600), n, "cpu", speeds(fast)[0]).config
            for n in (100_000, 10**9)]  # fmt: skip
    narrow, wide = (c.model.hidden_size for c in char)
    assert narrow < wide == max(autosize.WIDTHS)  # characters too, from fewer tokens


@pytest.mark.parametrize("level", ["char", "word"])
def test_a_budget_that_would_only_buy_memorising_stops_at_max_passes(level):
    """A 10-minute budget on a small text ends after MAX_PASSES passes, decayed by then, and says so;
    an explicit step or epoch limit is the user's."""
    fast = dict.fromkeys(autosize.WIDTHS, 50_000.0)
    most = autosize.MAX_PASSES[level]
    small = autosize.resolve(
        TrainConfig.from_options(corpus=("x",), level=level, time_budget=600), 1_000_000, "cpu", speeds(fast)[0]
    )  # 50k tokens/s x 600 s: 30 passes
    assert small.config.run.epochs == most and small.config.run.time_budget == 600
    assert f"stop after {most:.3g} passes" in small.reason
    # ... but a tiny text still gets MIN_CAPPED_STEPS steps: 500 x 16 x 100 char tokens over 50,000 is 16 passes
    tiny = autosize.resolve(
        TrainConfig.from_options(corpus=("x",), level=level, time_budget=600), 50_000, "cpu", speeds(fast)[0]
    )
    t = tiny.config.task
    assert tiny.config.run.epochs == max(most, autosize.MIN_CAPPED_STEPS * t.batch_size * t.bptt / 50_000)
    assert tiny.config.run.epochs * 50_000 >= autosize.MIN_CAPPED_STEPS * t.batch_size * t.bptt
    big = autosize.resolve(TrainConfig.from_options(corpus=("x",), level=level), 10**9, "cpu", speeds(fast)[0])
    assert big.config.run.epochs is None and "stop after" not in big.reason
    mine = TrainConfig.from_options(corpus=("x",), level=level, max_steps=100_000)
    assert autosize.resolve(mine, 50_000, "cpu", speeds(fast)[0]).config.run.epochs is None
