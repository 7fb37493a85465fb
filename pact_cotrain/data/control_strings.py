"""Control-token strings in a task row's text, for `pact data validate` to warn about.

Training encodes such a string as plain text (`pact_cotrain.control_text`), so it cannot forge a turn;
but a row holding `<|im_end|>` or `<|start_header_id|>` is usually a conversion mistake (a chat
rendered to text and stored as one message) or hostile, and worth a look. Without a tokenizer the
check knows the common families: `<|...|>` (ChatML, Qwen, Llama 3, Phi), Gemma's
`<start_of_turn>` / `<end_of_turn>`, Llama 2 / Mistral's `<s>`, `</s>`, `[INST]`, `[/INST]`.
"""

from __future__ import annotations

import re

CONTROL_STRING = re.compile(r"<\|[A-Za-z0-9_.:\-]{1,40}\|>|<(?:start|end)_of_turn>|</?s>|\[/?INST\]")


def control_strings_in(record: dict) -> list[tuple[str, str]]:
    """(field path, first control string) for each text field of a row's messages, trace and tools
    that holds one, in order."""
    found: list[tuple[str, str]] = []

    def walk(value, where: str) -> None:
        if isinstance(value, str):
            match = CONTROL_STRING.search(value)
            if match:
                found.append((where, match.group()))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")

    for section in ("messages", "trace", "tools"):
        walk(record.get(section), section)
    return found
