"""The Textual app. No torch/transformers import at module level here (a test enforces it)."""
