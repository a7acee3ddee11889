"""The student subcommands: teacher-corpus, train-draft, train-head and draft-quality."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from specrepro.cli.common import Subcommand, config_arg, load_teacher, section_entry

if TYPE_CHECKING:
    import torch

    from specrepro.training.teacher import Sample


def teacher_corpus_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher-corpus",
        help="run a target over its training prompts: tokens, top-k log-probs, features",
    )
    config_arg(p)
    p.add_argument("--teacher", required=True)
    p.add_argument("--prompts", required=True, help="training prompts JSONL")
    p.add_argument("--out", required=True, help="corpus file (.pt)")


def train_draft_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-draft", help="distil a draft model from its teacher (drafts.NAME)")
    config_arg(p)
    p.add_argument("--draft", required=True)
    p.add_argument("--corpus", required=True, help="the teacher corpus (teacher-corpus)")
    p.add_argument("--out", help="output folder (default: the registry path)")


def draft_quality_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "draft-quality",
        help="a draft's held-out perplexity and agreement on its target's corpus, its size, "
        "and its own task accuracy (the draft alone, vanilla decoding at T=0)",
    )
    config_arg(p)
    p.add_argument("--draft", required=True, help="a models.registry entry")
    p.add_argument("--corpus", required=True, help="the target's teacher corpus")
    p.add_argument(
        "--accuracy",
        nargs="*",
        default=[],
        metavar="DATASET=PROMPTS",
        help="datasets on which the draft alone answers the evaluated prompts (scored as the "
        "tidy table scores: SQuAD EM/F1, Spider execution accuracy)",
    )
    p.add_argument("--pair", help="the pair whose conversation format the draft answers in")
    p.add_argument("--out", required=True, help="JSON")


def train_head_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-head", help="train an EAGLE head for its target (heads.NAME)")
    config_arg(p)
    p.add_argument("--head", required=True)
    p.add_argument("--corpus", required=True, help="the teacher corpus (teacher-corpus)")
    p.add_argument("--out", help="output folder (default: the registry path)")


def cmd_teacher_corpus(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.data import read_prompts_jsonl
    from specrepro.prompting import default_conversation
    from specrepro.run.timing_group import seed_everything
    from specrepro.training.teacher import CorpusConfig, build_corpus

    config = load_config(args.config, args.set_json)
    cfg = CorpusConfig.from_config(section_entry(config, "teachers", args.teacher))
    prompts = read_prompts_jsonl(Path(args.prompts))
    seed_everything(cfg.seed)
    teacher, tokenizer = load_teacher(config, args.teacher, dtype=cfg.dtype)
    conversation = default_conversation(tokenizer)
    samples = build_corpus(teacher, tokenizer, prompts, cfg, conversation, Path(args.out))
    print(f"{len(samples)} sequences -> {args.out}")
    return 0


def _student_job(args: argparse.Namespace, section: str, name: str) -> tuple:
    """What training a student needs: its config entry, the teacher corpus, the teacher and the
    output folder (default: the student's registry path)."""
    from specrepro.config import load_config
    from specrepro.run.timing_group import seed_everything
    from specrepro.training.teacher import load_corpus

    config = load_config(args.config, args.set_json)
    entry = section_entry(config, section, name)
    samples, summary = load_corpus(Path(args.corpus))
    seed_everything(entry.get("seed", 0))
    teacher, tokenizer = load_teacher(config, entry["teacher"], training=True)
    out = Path(args.out or config["models"]["registry"][name]["path"])
    out.parent.mkdir(parents=True, exist_ok=True)
    return entry, samples, summary, teacher, tokenizer, out


def _subset_ids(
    entry: dict, samples: list[Sample], teacher: torch.nn.Module, where: str
) -> torch.Tensor | None:
    """The entry's draft vocabulary subset (models/vocab_subset.py), chosen from the corpus
    before training so that a bad value fails before the long run; None: full vocabulary."""
    from specrepro.models.vocab_subset import check_subset_size, frequent_tokens

    k = entry.get("vocab_subset")
    if k is None:
        return None
    vocab = int(teacher.get_output_embeddings().weight.shape[0])
    return frequent_tokens(samples, check_subset_size(k, vocab, where), vocab)


def _training_entry(entry: dict) -> dict:
    """The entry without the keys the training configs do not take (the subset is applied at
    load time for decoding; training itself always sees the full vocabulary)."""
    return {k: v for k, v in entry.items() if k != "vocab_subset"}


def cmd_train_draft(args: argparse.Namespace) -> int:
    from specrepro.models.vocab_subset import save_subset
    from specrepro.training.distill import DistillConfig, distill

    entry, samples, summary, teacher, tokenizer, out = _student_job(args, "drafts", args.draft)
    subset = _subset_ids(entry, samples, teacher, f"drafts.{args.draft}")
    cfg = DistillConfig.from_config(_training_entry(entry))
    distill(teacher, tokenizer, samples, cfg, out, summary)
    # Written into the published folder (a fresh one: publishing replaces the whole folder).
    if subset is not None:
        save_subset(out, subset)
    print(out)
    return 0


def cmd_train_head(args: argparse.Namespace) -> int:
    from specrepro.models.vocab_subset import save_subset
    from specrepro.training.train_head import HeadTrainConfig, train_and_save

    entry, samples, summary, target, _, out = _student_job(args, "heads", args.head)
    subset = _subset_ids(entry, samples, target, f"heads.{args.head}")
    cfg = HeadTrainConfig.from_config(_training_entry(entry))
    if cfg.format == "eagle3":
        # An EAGLE-3 head's draft vocabulary is its own lm_head, stored with the head (d2t).
        train_and_save(target, samples, cfg, out, summary, draft_vocab=subset)
    else:
        train_and_save(target, samples, cfg, out, summary)
        if subset is not None:
            save_subset(out, subset)
    print(out)
    return 0


def cmd_draft_quality(args: argparse.Namespace) -> int:
    from specrepro.config import load_config
    from specrepro.training.distill import draft_quality
    from specrepro.training.draft_alone import draft_accuracy
    from specrepro.training.teacher import load_corpus

    config = load_config(args.config, args.set_json)
    samples, summary = load_corpus(Path(args.corpus))
    draft, tokenizer = load_teacher(config, args.draft)
    # A DAG-built draft is scored on the holdout its training kept out.
    entry = config.get("drafts", {}).get(args.draft, {})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    quality = draft_quality(
        draft, samples, pad, entry.get("seed", 0), entry.get("holdout_fraction", 0.1)
    )
    quality.update(draft=args.draft, corpus=summary, training_steps=entry.get("steps"))
    log = _training_log(config, args.draft)
    if log:
        quality.update(
            training_steps=log.get("steps_run", quality["training_steps"]),
            training_stop=log.get("stop", "cap"),
            training_seconds=log.get("training_seconds"),
        )
    if args.accuracy:
        prompts = [(d, Path(p)) for d, _, p in (item.partition("=") for item in args.accuracy)]
        quality["accuracy"] = draft_accuracy(
            config, args.draft, draft, tokenizer, prompts, args.pair, on_dataset=print
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(quality, indent=1))
    print(json.dumps({k: v for k, v in quality.items() if k.startswith("holdout")}))
    return 0


def _training_log(config: dict, name: str) -> dict | None:
    """A DAG-built draft's training_log.json (steps run, why it stopped), if it has one."""
    entry = config["models"]["registry"].get(name, {})
    path = Path(entry.get("path", "")) / "training_log.json"
    if entry.get("source") != "built" or not path.is_file():
        return None
    return json.loads(path.read_text())


SUBCOMMANDS: dict[str, Subcommand] = {
    "teacher-corpus": Subcommand(teacher_corpus_parser, cmd_teacher_corpus),
    "train-draft": Subcommand(train_draft_parser, cmd_train_draft),
    "draft-quality": Subcommand(draft_quality_parser, cmd_draft_quality),
    "train-head": Subcommand(train_head_parser, cmd_train_head),
}
