"""What the user points at (folder, GGUF file, server URL), its metadata and merge recipe."""
