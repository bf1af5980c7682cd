"""charlm: train recurrent language models on your own text, generate text, measure perplexity."""

__version__ = "0.1.0"
