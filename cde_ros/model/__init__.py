"""The causal delta embedding model: network, losses, the `none` operating point, inference."""
