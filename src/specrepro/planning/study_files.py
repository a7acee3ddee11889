"""The draft-design study's files and job arguments, a part of the plan (`Plan` inherits
them): its results, latency profiles, draft qualities, training logs and report arguments."""

from __future__ import annotations

from .names import Study
from .paths import RunPaths


class StudyFiles(RunPaths):
    """Methods over the plan's `config`, `study` and file names (`model_ready`,
    `prompts_file`, `built_file`), which `Plan` sets."""

    config: dict
    study: Study | None

    def study_results(self) -> list[str]:
        if not self.study:
            return []
        return [self.in_results(f"draft_design/{self.study.pair}/results.json")]

    def study_result_args(self) -> list[str]:
        return [f"{self.study.pair}={path}" for path in self.study_results()]

    def study_latency(self, scale: str) -> list[str]:
        paper = self.study and self.study.spec.get("latency", {}).get("paper_scale")
        if not self.study or (scale == "paper" and not paper):
            return []
        return [self.in_results(f"draft_design/{self.study.pair}/latency_{scale}.json")]

    def latency_drafts(self) -> list[str]:
        """The drafts profiled at their own shapes, read from their configs: they must exist."""
        members = self.study.members.values() if self.study else []
        return [d for d in members if d not in self.study.shapes]

    def latency_draft_files(self) -> list[str]:
        return [self.model_ready(d) for d in self.latency_drafts()]

    def latency_members(self, w) -> str:
        """latency-profile's arguments at the default scale: the built families' solved shapes
        and the other drafts, the pair's own first (profiled at their own shapes)."""
        if w.scale != "default":
            return ""
        shapes = self.study.shapes if self.study else {}
        family = [f"{draft}:{shape}" for draft, shape in shapes.items()]
        drafts = self.latency_drafts()
        args = f"--family {' '.join(family)} " if family else ""
        return args + (f"--drafts {' '.join(drafts)}" if drafts else "")

    def latency_budget(self, w) -> int:
        draft = self.config["pairs"][w.pair]["draft"]
        return self.config["drafts"].get(draft, {}).get("num_layers", 1)

    def latency_settings(self) -> str:
        latency = self.study.spec.get("latency", {}) if self.study else {}
        return " ".join(
            f"--{key.replace('_', '-')} {value}"
            for key, value in latency.items()
            if key != "paper_scale"
        )

    def quality_files(self) -> list[str]:
        if not self.study:
            return []
        pair = self.study.pair
        return [
            self.in_results(f"draft_design/{pair}/quality_{draft}.json")
            for draft in self.study.members.values()
        ]

    def accuracy_datasets(self) -> list[str]:
        return self.study.spec.get("accuracy", []) if self.study else []

    def quality_prompts(self, w) -> list[str]:
        return [self.prompts_file(d) for d in self.accuracy_datasets()]

    def accuracy_args(self, w, input) -> str:
        prompts = list(input.prompts)
        if not prompts:
            return ""
        return "--accuracy " + " ".join(
            f"{d}={p}" for d, p in zip(self.accuracy_datasets(), prompts, strict=True)
        )

    def training_logs(self) -> dict[str, str]:
        """The built study drafts' training logs (the pair's own draft first): the loss curves."""
        if not self.study:
            return {}
        drafts = [d for d in self.study.members.values() if d in self.config["drafts"]]
        return {d: self.built_file(d, "training_log.json") for d in drafts}

    def study_prompts(self) -> list[str]:
        datasets = self.study.spec["datasets"] if self.study else []
        return [self.prompts_file(d) for d in datasets]

    def study_report_args(self, w, input) -> str:
        """draft-design-report's member arguments: PAIR=QUALITY, each draft's role, its training
        log, the lookahead sweep and its tuning split."""
        study = self.study
        members = " ".join(
            f"{p}={path}" for p, path in zip(study.members, input.quality, strict=True)
        )
        roles = " ".join(f"{d}={study.roles[d]}" for d in study.members.values())
        logs = " ".join(f"{d}={path}" for d, path in self.training_logs().items())
        gammas = " ".join(f"{m}={','.join(names)}" for m, names in study.gammas.items())
        tune = " ".join(f"{d}={n}" for d, n in study.spec.get("tune_questions", {}).items())
        prompts = " ".join(f"{d}={self.prompts_file(d)}" for d in study.spec["datasets"])
        args = f"--members {members} --roles {roles} --sweep {gammas} --prompts {prompts}"
        args += f" --training-logs {logs}" if logs else ""
        args += f" --reference {study.reference}" if study.reference else ""
        return args + (f" --tune {tune}" if tune else "")
