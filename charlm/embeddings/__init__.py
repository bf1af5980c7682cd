"""Contextual string embeddings: words embedded by the states of charlm character language models.

    CharLMEmbedding(lm, tokenizer, reverse)   one LM's embeddings: batch -> (B, W, D); `embed` -> per sentence
    embed_batch(embeddings, sentences)        several LMs (a forward and a backward one) concatenated

Other rooms import from here, not from the modules inside.
"""

from charlm.embeddings.contextual import CharLMEmbedding, boundaries, embed_batch

__all__ = ["CharLMEmbedding", "boundaries", "embed_batch"]
