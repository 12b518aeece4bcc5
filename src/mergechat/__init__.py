"""mergechat: a terminal chat client for local Hugging Face models and mergekit merges."""

__version__ = "0.1.0"
