"""specrepro: a reproducibility harness for speculative decoding."""

from specrepro.compat import check_versions

check_versions()
