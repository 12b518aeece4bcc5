"""Compare several models on one prompt: plan (which models), placement, runner, agreement.

Torch-free: the runner drives one `EngineClient` per model; torch work stays in the engine.
"""
