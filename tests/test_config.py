"""TrainConfig and the one rule for what a resume may change."""

from __future__ import annotations

import pytest

from charlm.errors import ConfigError
from charlm.training.config import DEFAULT_TIME_BUDGET, LIMITS, RESUMABLE, TrainConfig, resumed_config

STORED = TrainConfig(
    corpus=("a.txt",), out="run", hidden_size=16, max_steps=8, eval_interval=4, valid=("v.txt",)
).to_dict()


def test_unknown_keys_are_refused_like_model_options():
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict(STORED | {"hidden": 3})


def test_a_resume_keeps_what_is_not_given():
    c = resumed_config(STORED, {"corpus": ("a.txt",), "out": "run"})
    assert (c.hidden_size, c.max_steps, c.eval_interval, c.valid) == (16, 8, 4, ("v.txt",))


def test_the_limits_change_as_a_group():
    c = resumed_config(STORED, {"time_budget": 60.0})
    assert (c.max_steps, c.epochs, c.time_budget) == (None, None, 60.0)
    assert set(LIMITS) <= RESUMABLE


def test_a_fixed_option_may_be_restated_but_not_changed():
    assert resumed_config(STORED, {"hidden_size": 16}).hidden_size == 16
    with pytest.raises(ConfigError, match="--hidden, --lr cannot change when resuming") as exc:
        resumed_config(STORED, {"hidden_size": 32, "lr": 1.0}, {"hidden_size": "--hidden"})
    assert "\n" not in str(exc.value)


def test_explicit_options_are_those_a_caller_set():
    c = TrainConfig(corpus=("a.txt",), hidden_size=8, lr=TrainConfig.lr)
    assert set(c.explicit_options()) == {"corpus", "out", "hidden_size"}


def test_no_limit_means_the_default_budget():
    assert TrainConfig(corpus=("a",)).limits == (None, None, DEFAULT_TIME_BUDGET)
    assert TrainConfig(corpus=("a",), max_steps=3).limits == (None, 3, None)
