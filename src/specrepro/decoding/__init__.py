"""Decoding methods, one module per algorithm, all on the shared engine.

A module here is a method when it defines `Params` (a dataclass of its parameters),
`NEEDS_DRAFT` (bool) and `generate(ctx, prompt_ids, params) -> GenerationResult`. Adding a method
is adding a file; `get_method` finds it by name.
"""
