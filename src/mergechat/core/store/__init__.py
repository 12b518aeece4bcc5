"""Chat history: the SQLite store, the one reply recorder, and export."""
