"""The paper-scale recipes (configs/paper_qwen3_{4b,1.7b}_<method>.yaml): the paper's stated setup
(Qwen3-1.7B / -4B, FTRL training rows, batch 256, at most 10 turns), every other value tagged as ours."""

import re

import pytest

from pact_cotrain.recipes.phased import read_raw
from pact_cotrain.config import builtin_configs, load_config
from pact_cotrain.training import microbatch

SIZES = {"4b": "Qwen/Qwen3-4B", "1.7b": "Qwen/Qwen3-1.7B"}
# file's method -> (method.name, method.reward); None: the reward is not read (SFT)
METHODS = {"pact": ("pact", "solve_f1"), "grpo": ("grpo", "solve_f1"), "sft": ("sft", None),
           "ftrl": ("grpo", "ftrl_step"), "toolrl": ("grpo", "toolrl"),
           "chord_mu": ("chord_mu", "solve_f1"), "chord_phi": ("chord_phi", "solve_f1"),
           "matchtir": ("grpo", "matchtir"), "opsd": ("opsd", "solve_f1")}
PHASED = {"sft_then_matchtir": ("sft", "matchtir")}
RECIPES = [(size, method) for size in SIZES for method in [*METHODS, *PHASED]]
# Keys a recipe may leave untagged: what names the run, not a choice of setup.
UNTAGGED = {"output_dir", "name", "config"}


def _name(size, method):
    return f"paper_qwen3_{size}_{method}"


def _text(name):
    from importlib import resources

    return resources.files("pact_cotrain").joinpath(f"configs/{name}.yaml").read_text()


def test_every_paper_recipe_is_a_builtin():
    paper = {n for n in builtin_configs() if n.startswith("paper_")}
    assert paper == {_name(size, method) for size, method in RECIPES}


@pytest.mark.parametrize("size,method", [r for r in RECIPES if r[1] in METHODS])
def test_recipe_states_the_papers_setup(size, method):
    cfg = load_config(_name(size, method))
    assert cfg["model"] == SIZES[size]
    assert cfg["train"]["global_prompts_per_step"] == 256  # over all processes, each taking its share
    assert cfg["sampling"]["max_turns"] <= 10
    assert cfg["data"]["source"] == "file" and cfg["data"]["path"]
    name, reward = METHODS[method]
    assert cfg["method"]["name"] == name
    if reward is not None:
        assert cfg["method"]["reward"] == reward
    assert cfg["output_dir"] == f"runs/{_name(size, method)}"
    # the trainer refuses a generation batch that is not whole groups of K
    microbatch.generation_chunks(0, cfg["train"]["k"], cfg["sampling"]["generation_batch_size"])


@pytest.mark.parametrize("size", SIZES)
def test_phased_recipe_runs_the_papers_recipes(size):
    raw = read_raw(_name(size, "sft_then_matchtir"))
    phases = raw["phases"]
    assert [p["name"] for p in phases] == list(PHASED["sft_then_matchtir"])
    assert [p["config"] for p in phases] == [_name(size, m) for m in PHASED["sft_then_matchtir"]]
    # each phase runs its recipe's own max_steps: `stop: {epochs}` would count one process's prompts only
    assert all("stop" not in p for p in phases)
    for phase in phases:
        cfg = load_config(phase["config"])
        assert cfg["model"] == SIZES[size] and cfg["train"]["global_prompts_per_step"] == 256


@pytest.mark.parametrize("size,method", RECIPES)
def test_every_value_says_whose_it_is(size, method):
    """Each `key: value` line carries `# paper`, `# reported`, `# released` (the method's released code or
    config) or `# ours: why` (section headers and
    run names aside), and each file has at least one choice of ours."""
    text = _text(_name(size, method))
    assert "# ours" in text
    untagged = []
    for line in text.splitlines():
        match = re.match(r"\s*(?:- )?([\w.]+):\s*(\S.*)?$", line.split("#", 1)[0].rstrip() or "x")
        if not match or match.group(2) is None or match.group(1) in UNTAGGED:
            continue
        comment = line.split("#", 1)[1] if "#" in line else ""
        if not re.match(r"\s*(paper|reported|released|ours)\b", comment):
            untagged.append(line.strip())
    assert not untagged, f"{_name(size, method)}: lines without a paper/reported/released/ours tag: {untagged}"


@pytest.mark.parametrize("size", SIZES)
def test_methods_share_one_budget(size):
    """Only `method.*`, the run's folder and the SFT schedule differ between one size's recipes, so
    the comparison is matched; a key changed in one file and not the others fails here."""
    def shared(method):
        cfg = load_config(_name(size, method))
        cfg.pop("method"), cfg.pop("output_dir")
        if method == "sft":
            for key in ("max_steps", "learning_rate", "warmup_steps"):
                cfg["train"].pop(key)
        return cfg

    rl = shared("pact")
    for method in METHODS:
        cfg = shared(method)
        if method == "sft":
            rl_cut = {**rl, "train": {k: v for k, v in rl["train"].items() if k in cfg["train"]}}
            assert cfg == rl_cut, method
        else:
            assert cfg == rl, method


def test_missing_trace_file_is_a_one_line_error(tmp_path):
    """A recipe's data file not made yet: UserError naming the key, not a traceback."""
    from pact_cotrain.errors import UserError
    from pact_cotrain.recipes.train import load_train_tasks

    with pytest.raises(UserError, match="data.path=.*no such file"):
        load_train_tasks({"source": "file", "path": str(tmp_path / "ftrl_train_traces.jsonl")})


@pytest.mark.parametrize("method", METHODS)
def test_recipe_builds_its_trainer(method, tokenizer, model, tmp_path):
    """The recipe's keys reach a real PACTTrainer (tiny model; toolworld rows standing in for the FTRL
    file, whose prompts the tiny model's context could not hold anyway)."""
    from pact_cotrain.recipes.train import build_trainer

    cfg = load_config(_name("4b", method), ["data.source=toolworld", "data.n_train=256", f"output_dir={tmp_path}",
                                            "train.report_to=[]", "train.max_prompt_tokens=100000"])
    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    assert trainer.method.name == METHODS[method][0]
    assert trainer.micro_batch_tokens == cfg["train"]["micro_batch_tokens"]
    assert trainer.generation_batch_size == cfg["sampling"]["generation_batch_size"]
    assert trainer.args.per_device_train_batch_size == 256 * cfg["train"]["k"]
