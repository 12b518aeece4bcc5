"""Hardware detection: devices, the model-shaped precision probe, memory fit, policy."""
