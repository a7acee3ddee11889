"""The run path: load a pair (harness), decode one prompt (decoder), time a group of methods
question by question (timing_group) and write each record (question_run)."""
