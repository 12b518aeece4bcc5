"""Command-line entry points: argument parsing, one-shot mode, doctor, history, serve, demo."""
