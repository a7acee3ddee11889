"""Loading models from every source (hub, local folders, GGUF), vocabulary subsets and the
EAGLE head's format."""
