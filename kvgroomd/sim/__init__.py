"""The simulator: workloads, the engine model, replay, plots."""
