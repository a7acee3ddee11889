"""Conversation formats produce exactly the prompts of their published definitions."""

from __future__ import annotations

import pytest

from specrepro.prompting import conversation, prompt_text

RECORD = {"question_id": "1", "turns": ["What is 2+2?", "And 3+3?"]}
FEW_SHOT = {"question_id": "2", "turns": ["Q2"], "few_shot": [{"user": "Q1", "assistant": "A1"}]}


def test_vicuna_v1_1_matches_fastchat() -> None:
    # FastChat vicuna_v1.1: ADD_COLON_TWO, roles USER/ASSISTANT, sep " ", sep2 "</s>".
    system = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )
    assert prompt_text(conversation(RECORD, 0, []), "vicuna_v1.1") == (
        f"{system} USER: What is 2+2? ASSISTANT:"
    )
    assert prompt_text(conversation(RECORD, 1, ["4"]), "vicuna_v1.1") == (
        f"{system} USER: What is 2+2? ASSISTANT: 4</s>USER: And 3+3? ASSISTANT:"
    )
    assert prompt_text(conversation(FEW_SHOT, 0, []), "vicuna_v1.1") == (
        f"{system} USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"
    )


def test_llama_2_matches_fastchat_with_eagles_system_prompt() -> None:
    # FastChat llama-2 (LLAMA2 style, sep " ", sep2 " </s><s>") with the system message EAGLE
    # sets for LLaMA2-Chat, and EAGLE's " " after get_prompt().
    system = (
        "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
        "possible, while being safe.  Your answers should not include any harmful, unethical, "
        "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
        "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
        "or is not factually coherent, explain why instead of answering something not correct. "
        "If you don't know the answer to a question, please don't share false information."
    )
    head = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"
    assert prompt_text(conversation(RECORD, 0, []), "llama-2") == f"{head}What is 2+2? [/INST] "
    assert prompt_text(conversation(RECORD, 1, ["4"]), "llama-2") == (
        f"{head}What is 2+2? [/INST] 4 </s><s>[INST] And 3+3? [/INST] "
    )


def test_a_records_own_system_message_replaces_the_default() -> None:
    record = {**RECORD, "system": "Be brief."}
    assert prompt_text(conversation(record, 0, []), "vicuna_v1.1") == (
        "Be brief. USER: What is 2+2? ASSISTANT:"
    )
    assert prompt_text(conversation(record, 0, []), "llama-2").startswith(
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2?"
    )


def test_plain_and_unknown_formats() -> None:
    assert prompt_text(conversation(RECORD, 1, ["4"]), "plain") == (
        "User: What is 2+2?\nAssistant: 4\n\nUser: And 3+3?\nAssistant:"
    )
    with pytest.raises(ValueError, match="not a text conversation format"):
        prompt_text(conversation(RECORD, 0, []), "alpaca")


def test_completion_format_and_a_record_that_names_its_own_format() -> None:
    from specrepro.prompting import encode_turn, prompt_text

    record = {
        "turns": ["Context: c2\nQuestion: q2\nAnswer:"],
        "few_shot": [{"user": "Context: c1\nQuestion: q1\nAnswer:", "assistant": "a1"}],
        "system": None,
        "conversation": "completion",
    }
    messages = conversation(record, 0, [])
    text = prompt_text(messages, "completion")
    assert text == "Context: c1\nQuestion: q1\nAnswer: a1\n\nContext: c2\nQuestion: q2\nAnswer:"

    class Tokenizer:  # records what it was asked to tokenize
        chat_template = "x"

        def __call__(self, text):
            return {"input_ids": [len(text)]}

    # The record's own format wins over the pair's (here a chat template it never touches).
    assert encode_turn(Tokenizer(), record, 0, [], "chat_template") == [len(text)]
