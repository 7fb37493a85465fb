from pathlib import Path

import pytest

from pact_cotrain.testing import tiny_llama, tiny_tokenizer

QWEN3_TEMPLATE = (Path(__file__).parent / "templates" / "qwen3.jinja").read_text()


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    return tiny_tokenizer(chat_template=QWEN3_TEMPLATE)


@pytest.fixture()
def model(tokenizer):
    return tiny_llama(tokenizer)
