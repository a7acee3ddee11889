"""specrepro: a reproducibility harness for speculative decoding."""
