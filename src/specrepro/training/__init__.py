"""Building students from a target: the teacher corpus, draft distillation and draft families,
EAGLE head training, and the draft-alone and latency measurements."""
