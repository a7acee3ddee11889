"""From a prompt record (MT-bench shaped) and earlier answers to the token ids of one turn.

Conversation formats, chosen per pair (`pairs.NAME.conversation`):

- "chat_template": the tokenizer's own chat template (SmolLM2, LLaMA-2-Chat's tokenizer, ...).
- "vicuna_v1.1": FastChat's vicuna_v1.1 conversation, as EAGLE and Spec-Bench prompt Vicuna
  v1.3 (whose tokenizer has no chat template): system message, "USER: ... ASSISTANT:", turns
  separated by " " after a user message and "</s>" after an assistant message.
- "llama-2": FastChat's llama-2 conversation with the system prompt EAGLE uses for
  LLaMA2-Chat ("[INST] <<SYS>>\\n...\\n<</SYS>>\\n\\n{question} [/INST] "), EAGLE's trailing
  space included.
- "plain": "User: ...\\nAssistant:" for base models without a chat template.
- "completion": no roles at all: the system text, then each exchange as "{user} {assistant}"
  separated by blank lines, then the last user message; for prompts written to be continued
  ("...\\nAnswer:"). A prompt record may name its own format (`conversation`), which then
  overrides the pair's: SQuAD's 1-shot prompt is a completion prompt for every model.

The text formats are tokenized with the tokenizer's own special-token handling (BOS added
where the model's tokenizer adds it), as EAGLE's `tokenizer([prompt])` does.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

CONVERSATIONS = ("chat_template", "vicuna_v1.1", "llama-2", "plain", "completion")

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA2_CHAT_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially "
    "unbiased and positive in nature.\n\nIf a question does not make any sense, or is not "
    "factually coherent, explain why instead of answering something not correct. If you don't "
    "know the answer to a question, please don't share false information."
)


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


def encode_turn(
    tokenizer: PreTrainedTokenizerBase,
    record: dict,
    turn: int,
    answers: list[str],
    pair_conversation: str,
) -> list[int]:
    """Token ids of one turn, in the record's own format if it names one, else the pair's."""
    messages = conversation(record, turn, answers)
    return encode(tokenizer, messages, record.get("conversation") or pair_conversation)


def default_conversation(tokenizer: PreTrainedTokenizerBase) -> str:
    return "chat_template" if tokenizer.chat_template else "plain"


def check_conversation(name: str) -> str:
    if name not in CONVERSATIONS:
        raise ValueError(f"unknown conversation format {name!r}; choose one of {CONVERSATIONS}")
    return name


def encode(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], conversation: str
) -> list[int]:
    check_conversation(conversation)
    if conversation == "chat_template":
        if not tokenizer.chat_template:
            raise ValueError("the pair asks for the chat template but the tokenizer has none")
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    return tokenizer(prompt_text(messages, conversation))["input_ids"]


def prompt_text(messages: list[dict], conversation: str) -> str:
    """The prompt string of a text conversation format, ending where the model answers."""
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    turns = [m for m in messages if m["role"] != "system"]
    if conversation == "vicuna_v1.1":
        text = (system or VICUNA_SYSTEM) + " "
        for m in turns:
            if m["role"] == "user":
                text += f"USER: {m['content']} "
            else:
                text += f"ASSISTANT: {m['content']}</s>"
        return text + "ASSISTANT:"
    if conversation == "llama-2":
        text = f"[INST] <<SYS>>\n{system or LLAMA2_CHAT_SYSTEM}\n<</SYS>>\n\n"
        for i, m in enumerate(turns):
            if i == 0:
                text += m["content"] + " "
            elif m["role"] == "user":
                text += f"[INST] {m['content']} "
            else:
                text += f"[/INST] {m['content']} </s><s>"
        return text + "[/INST] "
    if conversation == "completion":
        parts = [system] if system else []
        exchanges = [m["content"] for m in turns]
        for i in range(0, len(exchanges) - 1, 2):
            parts.append(f"{exchanges[i]} {exchanges[i + 1]}")
        return "\n\n".join(parts + [exchanges[-1]])
    if conversation == "plain":
        parts = [system + "\n"] if system else []
        for m in turns:
            if m["role"] == "user":
                parts.append(f"User: {m['content']}\n")
            else:
                parts.append(f"Assistant: {m['content']}\n\n")
        return "".join(parts) + "Assistant:"
    raise ValueError(f"{conversation!r} is not a text conversation format")
