"""Benchmarks of lstm-jax against torch.nn.LSTM and flax (run as `python -m benchmarks.X`)."""
