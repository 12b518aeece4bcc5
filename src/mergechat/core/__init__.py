"""The UI-free heart of mergechat: inspection, detection, the engine thread, config and storage.

Nothing in this package may import Textual (a test enforces it).
"""
