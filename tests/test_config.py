"""TrainConfig: its sections, flat option names, both stored forms, and the one rule for what a resume may change."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.errors import ConfigError
from charlm.training.config import (
    DEFAULT_TIME_BUDGET,
    DEFAULTS,
    LEVELS,
    LIMITS,
    MAX_SEED,
    OPTIONS,
    RESUMABLE,
    SCHEDULES,
    SECTIONS,
    TrainConfig,
    flat_options,
    resumed_config,
)

STORED = TrainConfig.from_options(
    corpus=("a.txt",), out="run", hidden_size=16, max_steps=8, eval_interval=4, valid=("v.txt",)
).to_dict()


def test_unknown_keys_are_refused_like_model_options():
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict(STORED | {"hidden": 3})


def test_a_resume_keeps_what_is_not_given():
    c = resumed_config(STORED, {"corpus": ("a.txt",), "out": "run"})
    assert (c.model.hidden_size, c.run.max_steps, c.run.eval_interval, c.data.valid) == (16, 8, 4, ("v.txt",))


def test_the_limits_change_as_a_group():
    c = resumed_config(STORED, {"time_budget": 60.0})
    assert (c.run.max_steps, c.run.epochs, c.run.time_budget) == (None, None, 60.0)
    assert set(LIMITS) <= RESUMABLE


def test_a_fixed_option_may_be_restated_but_not_changed():
    assert resumed_config(STORED, {"hidden_size": 16}).model.hidden_size == 16
    with pytest.raises(ConfigError, match="--hidden, --lr cannot change when resuming") as exc:
        resumed_config(STORED, {"hidden_size": 32, "lr": 1.0}, {"hidden_size": "--hidden"})
    assert "\n" not in str(exc.value)


def test_explicit_options_are_those_a_caller_set():
    c = TrainConfig.from_options(corpus=("a.txt",), hidden_size=8, lr=DEFAULTS["lr"])
    assert set(c.explicit_options()) == {"corpus", "out", "hidden_size"}


def test_no_limit_means_the_default_budget():
    assert TrainConfig.from_options(corpus=("a",)).run.limits == (None, None, DEFAULT_TIME_BUDGET)
    assert TrainConfig.from_options(corpus=("a",), max_steps=3).run.limits == (None, 3, None)


# ---------------------------------------------------------------- sections, flat names, both stored forms
def test_options_are_built_and_changed_by_flat_name_and_read_by_section():
    c = TrainConfig.from_options(corpus=["a.txt"], hidden_size=8, lr=1e-3, model="kn", level="word", bptt=35)
    assert c.data.corpus == ("a.txt",) and c.model.hidden_size == 8 and c.optim.lr == 1e-3
    assert (c.model.kind, c.tokenizer.level, c.task.bptt) == ("kn", "word", 35)
    wider = c.replace(hidden_size=512, max_steps=3)
    assert (wider.model.hidden_size, wider.run.max_steps, c.model.hidden_size) == (512, 3, 8)
    assert wider.options() == c.options() | {"hidden_size": 512, "max_steps": 3}
    assert set(c.options()) == set(OPTIONS) and set(DEFAULTS) == set(OPTIONS) - {"corpus"}


@pytest.mark.parametrize("build", [lambda: TrainConfig.from_options(corpus=("a",), hiden_size=8),
                                   lambda: TrainConfig.from_options(corpus=("a",)).replace(hiden_size=8)])  # fmt: skip
def test_a_misspelt_option_is_one_line_naming_the_closest(build):
    with pytest.raises(ConfigError, match=r"^unknown training option 'hiden_size'; did you mean hidden_size\?$"):
        build()


def test_the_checkpoint_holds_sections_and_reads_the_flat_form_of_earlier_runs():
    c = TrainConfig.from_options(corpus=("a.txt",), out="run", hidden_size=16, model="rnn", adaptive_cutoffs=(4, 9))
    stored = c.to_dict()
    assert list(stored) == list(SECTIONS) and stored["model"]["kind"] == "rnn"
    assert stored["model"]["adaptive_cutoffs"] == [4, 9] and stored["data"]["corpus"] == ["a.txt"]
    flat = {k: list(v) if isinstance(v, tuple) else v for k, v in c.options().items()}
    assert TrainConfig.from_dict(stored) == TrainConfig.from_dict(flat) == c
    assert flat_options(stored) == flat_options(flat) == flat


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d | {"hidden": 3}, "['hidden']"),  # a key beside the sections
        (lambda d: d | {"model": d["model"] | {"heads": 4}}, "['model.heads']"),  # a key inside one
        (lambda d: d | {"model": d["model"] | {"model": "rnn"}}, "['model.model']"),  # the flat name of kind
        (lambda d: d | {"model": "rnn"}, "['model']"),  # a flat value where a section belongs
    ],
)
def test_unknown_keys_are_refused_in_the_sectioned_form(change, named):
    with pytest.raises(ConfigError, match=re.escape(f"unknown training options {named}; was this checkpoint made")):
        TrainConfig.from_dict(change(STORED))


def test_unknown_keys_are_refused_in_the_flat_form():
    flat = TrainConfig.from_dict(STORED).options()
    with pytest.raises(ConfigError, match=re.escape("unknown training options ['heads', 'kind']; was this")):
        TrainConfig.from_dict(flat | {"heads": 4, "kind": "rnn"})


def test_a_resume_reads_a_flat_stored_dict_too():
    flat = TrainConfig.from_dict(STORED).options()
    c = resumed_config(flat, {"time_budget": 60.0})
    assert (c.model.hidden_size, c.run.max_steps, c.run.time_budget) == (16, None, 60.0)


_PATHS = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3).map(tuple)
_DRAWN = {
    "corpus": _PATHS,
    "valid": st.one_of(st.just(()), _PATHS),
    "out": st.none() | st.text(max_size=6),
    "level": st.sampled_from(LEVELS),
    "min_freq": st.none() | st.integers(1, 5),
    "hidden_size": st.none() | st.integers(1, 4096),
    "dropout": st.none() | st.floats(0, 0.99),
    "tie_weights": st.none() | st.booleans(),
    "adaptive_softmax": st.none() | st.booleans(),
    "lr": st.none() | st.floats(1e-6, 10),
    "schedule": st.sampled_from(SCHEDULES),
    "batch_size": st.none() | st.integers(1, 512),
    "bptt_jitter": st.booleans(),
    "tar": st.none() | st.floats(0, 4),
    "time_budget": st.none() | st.floats(1, 1e6),
    "max_steps": st.none() | st.integers(1, 10**9),
    "seed": st.integers(0, MAX_SEED),
    "baselines": st.booleans(),
}


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({"corpus": _PATHS}, optional={k: v for k, v in _DRAWN.items() if k != "corpus"}))
def test_every_config_round_trips_through_json_in_both_forms(options):
    c = TrainConfig.from_options(**options)
    sectioned = json.loads(json.dumps(c.to_dict()))
    flat = json.loads(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in c.options().items()}))
    assert TrainConfig.from_dict(sectioned) == TrainConfig.from_dict(flat) == c
    assert TrainConfig.from_options(**c.options()) == c and c.replace(**options) == c
