"""Where a run's files go: every configuration has a run name, and everything it computes from
its own settings (prompts, raw results, tidy tables, tuning, teacher corpora, figures, logs)
lives under that name, so two configurations in one checkout never read or overwrite each
other's files. Shared inputs (the data download, hub caches, built models at the paths the
registry names) stay where the config puts them."""

from __future__ import annotations

import re
from dataclasses import dataclass

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class RunPaths:
    run: str

    def __post_init__(self) -> None:
        if not RUN_NAME.fullmatch(self.run):
            raise ValueError(
                f"run name {self.run!r}: use letters, digits, '.', '_' and '-' only "
                "(it names folders under results/ and figures/)"
            )

    def in_results(self, path: str) -> str:
        return f"results/{self.run}/{path}"

    def in_figures(self, path: str) -> str:
        return f"figures/{self.run}/{path}"

    def in_logs(self, path: str) -> str:
        return f"logs/{self.run}/{path}"

    def in_benchmarks(self, path: str) -> str:
        return f"benchmarks/{self.run}/{path}"
