"""Decoding: turning a model and a prompt into text (greedy, sampling and its filters, beam search).

    options   DecodingOptions: the strategy, its knobs, stop conditions, limits
    filters   pure logit filters and the choice of one token
    history   pure filters that read the ids generated so far (penalties, no-repeat n-gram, min_new_tokens,
              banned strings)
    controls  the per-run state those filters read (None when they are all off)
    text      prompts in, stable text pieces out, stop rules, results
    decode    the loops: warm_up, sampling batches, streaming, generate()
    beam      batched beam search with length normalisation

Whatever the strategy, the reported log-probability is the model's own (before
temperature and filters), in nats. <unk> is never generated unless
`allow_unk=True` (it has no text: a char model's <unk> would print as U+FFFD).
Stop conditions: `max_new_tokens`; <eos> for kinds with one (the word kind:
`lines` line ends, default 1); `lines` line ends ("\\n" in the text) for the
others; stop strings (the text ends just before the first one).
"""

from charlm.sampling.batch import MAX_LOGPROBS, DecodeBatch, RowEvent, run_batch
from charlm.sampling.beam import BeamFinisher, Hypothesis, beam_search, length_normalised
from charlm.sampling.decode import TextStream, generate, stream, token_steps, warm_up
from charlm.sampling.filters import (
    apply_temperature,
    ban,
    choose,
    filter_logits,
    greedy_next,
    min_p_filter,
    sample_next,
    top_k_filter,
    top_p_filter,
    typical_p_filter,
)
from charlm.sampling.history import (
    banned_sequences_filter,
    min_new_tokens_filter,
    no_repeat_ngram_filter,
    presence_frequency_filter,
    repetition_penalty_filter,
    token_counts,
)
from charlm.sampling.options import (
    MAX_BEAM_WIDTH,
    MAX_NEW_TOKENS,
    MAX_SAMPLES,
    STRATEGIES,
    DecodingOptions,
    LogitsProcessor,
)
from charlm.sampling.protocols import DecodingModel, TextCodec
from charlm.sampling.rng import RowRandom, derived_seed, row_key, seed_of, uniforms
from charlm.sampling.text import (
    Generation,
    Prompt,
    StopMatcher,
    TextDecoder,
    TokenInfo,
    describe_unknown,
    encode_prompt,
)

__all__ = [
    "MAX_LOGPROBS",
    "DecodeBatch",
    "RowEvent",
    "TokenInfo",
    "run_batch",
    "RowRandom",
    "derived_seed",
    "row_key",
    "seed_of",
    "uniforms",
    "MAX_BEAM_WIDTH",
    "MAX_NEW_TOKENS",
    "MAX_SAMPLES",
    "STRATEGIES",
    "BeamFinisher",
    "DecodingModel",
    "DecodingOptions",
    "Generation",
    "Hypothesis",
    "LogitsProcessor",
    "Prompt",
    "StopMatcher",
    "TextCodec",
    "TextDecoder",
    "TextStream",
    "apply_temperature",
    "ban",
    "banned_sequences_filter",
    "beam_search",
    "choose",
    "describe_unknown",
    "encode_prompt",
    "filter_logits",
    "generate",
    "greedy_next",
    "length_normalised",
    "min_new_tokens_filter",
    "min_p_filter",
    "no_repeat_ngram_filter",
    "presence_frequency_filter",
    "repetition_penalty_filter",
    "sample_next",
    "stream",
    "token_counts",
    "token_steps",
    "top_k_filter",
    "top_p_filter",
    "typical_p_filter",
    "warm_up",
]
