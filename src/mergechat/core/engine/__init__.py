"""The one place that runs torch: load, generate, switch precision, fidelity, engine process."""
