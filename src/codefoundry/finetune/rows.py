"""Fine-tuning rows → (prompt, response) text, one function per format; a bad row gives a reason slug.

    instruction  {"instruction": …, "response" (or Alpaca's "output"): …, "input"?: …}
                 chat template: user = instruction (+ input), assistant = response
                 plain:         "Question: {instruction}\\n\\nAnswer: " + response   (StarCoder's fine-tune)
    chat         {"messages": [{"role": …, "content": …}, …, {"role": "assistant", …}]}
                 prompt = the template up to the last assistant turn, response = that turn
    commits      {"old_contents": …, "new_contents": …, "message" | "subject": …}   (CommitPack's columns)
                 "<commit_before>{old}<commit_msg>{message}<commit_after>" + new   (StarCoder's commit format)

Reasons are stable slugs (`missing_field:response`, `too_long`, …) counted per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from codefoundry.errors import UserError

# The keys that identify each JSONL format (auto-detection reads the first row that is an object).
FORMAT_KEYS = {"chat": ("messages",), "instruction": ("instruction",), "commits": ("old_contents", "new_contents")}
PLAIN_PROMPT = "Question: {instruction}\n\nAnswer: "   # bigcode-project/starcoder finetune/finetune.py


@dataclass(frozen=True)
class Rendered:
    """A row as text: the prompt (masked from the loss when asked) and the response; `eos`: append EOS."""

    prompt: str
    response: str
    eos: bool


def detect_format(row: Any) -> str | None:
    """The format whose keys `row` has, or None."""
    if not isinstance(row, dict):
        return None
    for name, keys in FORMAT_KEYS.items():
        if any(k in row for k in keys):
            return name
    return None


def _text(row: dict[str, Any], key: str, required: bool = True) -> str | None:
    """The string field `key`, raising a reason slug (as ValueError) when missing, empty or not text."""
    if key not in row or row[key] is None:
        if required:
            raise ValueError(f"missing_field:{key}")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"wrong_type:{key}")
    if required and not value.strip():
        raise ValueError(f"empty_field:{key}")
    return value


class Renderer:
    """Renders rows of one format with one tokenizer (its chat template, when used)."""

    def __init__(self, fmt: str, tokenizer, template: str = "auto") -> None:
        self.fmt, self.tokenizer = fmt, tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if fmt == "chat" and not has_template:
            raise UserError("the model's tokenizer has no chat template, which `messages` rows need",
                            hint="write rows as {\"instruction\": …, \"response\": …} instead")
        if template == "chat" and not has_template:
            raise UserError("--template chat: the model's tokenizer has no chat template",
                            hint="use --template plain (StarCoder's Question/Answer prompt)")
        self.use_chat = fmt == "chat" or (fmt == "instruction" and template != "plain" and has_template)

    def render(self, row: Any) -> Rendered:
        """The row's text; raises ValueError(reason slug) for a bad row."""
        if not isinstance(row, dict):
            raise ValueError("not_an_object")
        if self.fmt == "chat":
            if "messages" not in row:
                raise ValueError("missing_field:messages")
            return self._chat(row["messages"])
        if self.fmt == "commits":
            old, new = _text(row, "old_contents"), _text(row, "new_contents")
            message = _text(row, "message", required=False) or _text(row, "subject", required=False)
            if not message or not message.strip():
                raise ValueError("missing_field:message")
            return Rendered(f"<commit_before>{old}<commit_msg>{message}<commit_after>", new, eos=True)
        answer = "output" if "output" in row and "response" not in row else "response"   # Alpaca's name
        instruction, response = _text(row, "instruction"), _text(row, answer)
        extra = _text(row, "input", required=False)
        if extra and extra.strip():
            instruction = f"{instruction}\n\n{extra}"
        if self.use_chat:
            return self._chat([{"role": "user", "content": instruction}, {"role": "assistant", "content": response}])
        return Rendered(PLAIN_PROMPT.format(instruction=instruction), response, eos=True)

    def _chat(self, messages: Any) -> Rendered:
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise ValueError("bad_messages")
        if messages[-1]["role"] != "assistant":
            raise ValueError("last_message_not_assistant")
        if not messages[-1]["content"].strip():
            raise ValueError("empty_field:messages")
        prompt = self.tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            # the template renders earlier turns differently once an answer follows: no clean prompt/response cut
            raise ValueError("chat_template_mismatch")
        return Rendered(prompt, full[len(prompt):], eos=False)
