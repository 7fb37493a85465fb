"""Chat templates shipped with the package."""

from importlib import resources


def chatml_tool_template() -> str:
    """ChatML with Hermes/Qwen2.5-style tool calling, for models whose own template ignores `tools=`."""
    return resources.files("pact_cotrain.templates").joinpath("chatml_tools.jinja").read_text()
