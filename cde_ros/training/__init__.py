"""Training, evaluation and benchmarks: the training loop and its config, metrics and plots, the 2D\nOOD benchmark and the benchmarks on simulated recordings (suite, evaluation, few-shot)."""
