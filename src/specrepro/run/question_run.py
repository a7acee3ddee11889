"""One question's record: each turn generated inside the timed and energy windows, then
decoded and scored outside them."""

from __future__ import annotations

import zlib

import torch

from specrepro.energy import EnergyMeter
from specrepro.prompting import encode_turn
from specrepro.run.decoder import Decoder, LoadedPair


def question_seed(seed: int, question_id: str, turn: int) -> int:
    """Per-question seed, so a resumed run draws exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + zlib.crc32(f"{question_id}/{turn}".encode())) % 2**63


def start_memory_peak(engine: Decoder) -> None:
    """On a GPU: free every shared runner's cache, then reset the device's peak. Runners are
    shared per model in a timing group, so without the release a member's peak would hold the
    largest earlier member's cache (beam's rows, say). On the CPU no peak is read, and reused
    buffers spare each generation the first-touch page faults of fresh ones."""
    if engine.target.device.type == "cuda":
        engine.release_buffers()
        torch.cuda.reset_peak_memory_stats(engine.target.device)


def run_question(
    engine: Decoder,
    loaded: LoadedPair,
    meter: EnergyMeter,
    prompt: dict,
    max_new_tokens: int,
    seed: int,
    meta: dict,
    score: bool = True,
) -> dict:
    """The question's result record: every turn, each one generated on the previous answers.
    Without `score` the target log-likelihood is left to `score_record` (a repeat that is not
    kept needs none)."""
    qid = str(prompt["question_id"])
    answers: list[str] = []
    turns: list[dict] = []
    for t in range(len(prompt["turns"])):
        prompt_ids = encode_turn(loaded.tokenizer, prompt, t, answers, loaded.conversation)
        # Full-length methods still have their answer extracted when scored (report/tidy.py).
        answer_format = "free"
        if engine.method.stop_at_answer:
            answer_format = prompt.get("answer_format", "free")
        start_memory_peak(engine)
        with meter.window() as energy:
            result, timer = engine.generate(
                prompt_ids, max_new_tokens, question_seed(seed, qid, t), answer_format
            )
        cuda = engine.target.device.type == "cuda"
        peak = torch.cuda.max_memory_allocated(engine.target.device) if cuda else None
        text = loaded.tokenizer.decode(result.tokens, skip_special_tokens=True)
        answers.append(text)
        split = timer.split()
        turns.append(
            {
                "text": text,
                "token_ids": result.tokens,
                "new_tokens": result.new_tokens,
                "wall_time": timer.total,
                "target_forwards": result.target_forwards,
                "verify_forwards": result.verify_forwards,
                "verified_tokens": result.verified_tokens,
                "draft_forwards": result.draft_forwards,
                "accept_lengths": result.accept_lengths,
                "time_draft": split["draft"],
                "time_verify": split["verify"],
                "time_other": split["other"],
                "prompt_tokens": len(prompt_ids),
                "kv_bytes_peak": result.kv_bytes_peak,
                "stop_reason": result.stop_reason,
                "target_loglik": None,
                "peak_gpu_memory_bytes": peak,
                "energy": energy.to_dict(),
                "extra": result.extra,
            }
        )
    record = {
        "record": "question",
        "question_id": qid,
        "dataset": prompt.get("dataset"),
        "pair": meta["pair"],
        "method": meta["method"],
        "algorithm": meta["algorithm"],
        "temperature": meta["temperature"],
        "seed": meta["seed"],
        "dtype": meta["dtype"],
        "batch_size": 1,
        "model_id": f"{meta['pair']}-{meta['method']}",
        "choices": [
            {
                "index": 0,
                "turns": [t["text"] for t in turns],
                "new_tokens": [t["new_tokens"] for t in turns],
                "wall_time": [t["wall_time"] for t in turns],
                "idxs": [t["target_forwards"] for t in turns],
            }
        ],
        "turns": turns,
        "reference": prompt.get("reference", {}),
    }
    return score_record(engine, loaded, prompt, record) if score else record


def score_record(engine: Decoder, loaded: LoadedPair, prompt: dict, record: dict) -> dict:
    """Fill in each turn's target log-likelihood, after the timed and energy windows (quality is
    not part of the speed): each turn's prompt is rebuilt from the record's earlier answers."""
    answers: list[str] = []
    for t, turn in enumerate(record["turns"]):
        prompt_ids = encode_turn(loaded.tokenizer, prompt, t, answers, loaded.conversation)
        turn["target_loglik"] = engine.target_loglik(prompt_ids, turn["token_ids"])
        answers.append(turn["text"])
    return record
