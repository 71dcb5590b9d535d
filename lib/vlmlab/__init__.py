"""vlmlab: how vision-language models turn images into something a language model can read."""
__version__ = "0.1.0"
