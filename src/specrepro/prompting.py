"""From a prompt record (MT-bench shaped) and earlier answers to the token ids of one turn."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


def conversation(record: dict, turn: int, answers: list[str]) -> list[dict]:
    """Messages for `turn`: system, few-shot exchanges, then earlier turns with our answers."""
    messages: list[dict] = []
    if record.get("system"):
        messages.append({"role": "system", "content": record["system"]})
    for shot in record.get("few_shot") or []:
        messages.append({"role": "user", "content": shot["user"]})
        messages.append({"role": "assistant", "content": shot["assistant"]})
    for i in range(turn):
        messages.append({"role": "user", "content": record["turns"][i]})
        messages.append({"role": "assistant", "content": answers[i]})
    messages.append({"role": "user", "content": record["turns"][turn]})
    return messages


def encode(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], use_chat_template: bool
) -> list[int]:
    if use_chat_template:
        if not tokenizer.chat_template:
            raise ValueError("the pair asks for the chat template but the tokenizer has none")
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(plain_prompt(messages))["input_ids"]


def plain_prompt(messages: list[dict]) -> str:
    """A simple dialogue format for base models without a chat template."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"] + "\n")
        elif m["role"] == "user":
            parts.append(f"User: {m['content']}\n")
        else:
            parts.append(f"Assistant: {m['content']}\n\n")
    return "".join(parts) + "Assistant:"
