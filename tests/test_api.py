"""The public API: `from pact_cotrain import PACTConfig, PACTTrainer` with TRL's arguments, config keys
naming a user's own code, and data from anywhere `datasets` reads. Tiny random models; seconds each."""

import json
import math
import sys
import textwrap

import pytest

from pact_cotrain.errors import UserError
from pact_cotrain.testing import tiny_llama, tiny_tokenizer

# A TRL-style agent, written as a TRL user writes one: a class whose public methods are tools,
# reset(**row) and get_reward(); a plain function tool; a reward function of completions + columns.
AGENT = textwrap.dedent('''
    class Shop:
        def reset(self, **kwargs):
            self.stock = {"apple": 3, "pear": 0}
            self.asked = []

        def check_stock(self, item: str) -> int:
            """How many of an item are in stock.

            Args:
                item: the item's name
            """
            self.asked.append(item)
            return self.stock.get(item, 0)

        def get_reward(self) -> float:
            return 1.0 if "apple" in self.asked else 0.0


    def price(item: str) -> float:
        """The price of an item.

        Args:
            item: the item's name
        """
        return {"apple": 0.5}.get(item, 1.0)


    def mentions_answer(prompts, completions, answer, **kwargs):
        return [1.0 if str(a) in (c[-1]["content"] if c else "") else 0.0 for c, a in zip(completions, answer)]


    TOOLS = [price]
''')

TRACE = [{"role": "assistant", "content": "", "tool_calls": [{"name": "check_stock", "arguments": {"item": "apple"}}]},
         {"role": "tool", "name": "check_stock", "content": "3"},
         {"role": "assistant", "content": "3 apples."}]


def rows(traced: bool, n: int = 4) -> list[dict]:
    out = []
    for i in range(n):
        row = {"prompt": [{"role": "user", "content": f"How many apples? ({i})"}], "answer": "3"}
        if traced:
            row["trace"] = TRACE
        out.append(row)
    return out


@pytest.fixture()
def agent(tmp_path, monkeypatch):
    (tmp_path / "my_agent.py").write_text(AGENT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_agent", None)
    import my_agent

    return my_agent


def small_args(tmp_path, **kwargs):
    from pact_cotrain import PACTConfig

    values = dict(output_dir=str(tmp_path / "run"), max_steps=1, num_generations=2, prompts_per_step=2,
                  max_completion_length=48, max_new_tokens_per_turn=12, max_tool_calling_iterations=1,
                  learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                  logging_steps=1)
    values.update(kwargs)
    return PACTConfig(**values)


def test_import_is_lazy_and_names_the_api():
    import subprocess

    code = ("import sys, pact_cotrain; assert 'trl' not in sys.modules and 'torch' not in sys.modules; "
            "from pact_cotrain import PACTConfig, PACTTrainer; from trl import GRPOConfig, GRPOTrainer; "
            "print(issubclass(PACTTrainer, GRPOTrainer), issubclass(PACTConfig, GRPOConfig))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_pact_config_maps_onto_method_and_sampling(tmp_path):
    from trl import GRPOConfig

    from pact_cotrain.training.api import as_pact_config, method_config, sampling_config

    args = small_args(tmp_path, method="pact", anchor_q=0.5, epsilon=0.1, epsilon_high=0.3, temperature=0.7,
                      method_overrides={"trace_view": "no_reasoning"})
    assert isinstance(args, GRPOConfig) and args.per_device_train_batch_size == 4
    method, sampling = method_config(args), sampling_config(args)
    assert (method.name, method.anchor_q, method.eps_low, method.eps_high, method.trace_view) == \
        ("pact", 0.5, 0.1, 0.3, "no_reasoning")
    assert (sampling.max_turns, sampling.max_new_tokens_per_turn, sampling.max_completion_tokens,
            sampling.temperature) == (2, 12, 48, 0.7)
    trl_args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=3, use_cpu=True)
    converted = as_pact_config(trl_args)
    assert converted.prompts_per_step == 2 and converted.method == "pact"
    with pytest.raises(UserError, match="method_overrides: unknown MethodConfig field 'anchor_qq'"):
        small_args(tmp_path, method_overrides={"anchor_qq": 1})
    with pytest.raises(UserError, match="method.name must be one of"):
        small_args(tmp_path, method="pcat")


def test_bad_module_attr_is_one_line(tmp_path, monkeypatch, agent):
    from pact_cotrain.user_code import resolve, resolve_list

    assert resolve("my_agent:Shop", "env") is agent.Shop
    assert resolve_list("my_agent:TOOLS", "tools") == [agent.price]
    for spec, expected in [("no_such_module:Env", "cannot import module 'no_such_module'"),
                           ("my_agent:Nope", "has no attribute 'Nope'"),
                           ("my_agent", "expected MODULE:ATTR")]:
        with pytest.raises(UserError, match=expected) as info:
            resolve(spec, "env")
        assert "\n" not in str(info.value) and f"env={spec}" in str(info.value).replace("'", "")
    with pytest.raises(UserError, match="neither MODULE:ATTR nor a built-in"):
        resolve_list(["trace_mach"], "reward_funcs", builtins={"trace_match": None})


def test_rows_from_parquet_a_saved_dataset_and_a_dataset_folder(tmp_path):
    from datasets import Dataset

    from pact_cotrain.data.sources import load_task_rows

    data = [{"id": f"t{i}", "prompt": f"question {i}", "answer": i,
             "trace": [{"role": "assistant", "content": "", "tool_calls": [
                 {"name": "lookup", "arguments": {"q": str(i)} if i else {"q": "0", "limit": 2}}]},
                       {"role": "tool", "name": "lookup", "content": "x"},
                       {"role": "assistant", "content": f"it is {i}"}]} for i in range(3)]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}}}}}]
    for row in data:
        row["tools"] = tools
    Dataset.from_list(data).to_parquet(str(tmp_path / "tasks.parquet"))
    Dataset.from_list(data).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "repo" / "data").mkdir(parents=True)
    Dataset.from_list(data).to_parquet(str(tmp_path / "repo" / "data" / "train-00000.parquet"))
    for path in ("tasks.parquet", "saved", "repo"):
        tasks = load_task_rows(str(tmp_path / path))
        assert [t.id for t in tasks] == ["t0", "t1", "t2"], path
        assert tasks[0].messages == [{"role": "user", "content": "question 0"}]
        assert tasks[1].metadata == {"answer": 1}
        # Arrow gave row 1's call `limit: None` (the union of the structs' keys): dropped
        assert tasks[1].trace[0]["tool_calls"][0]["arguments"] == {"q": "1"}
        assert tasks[0].trace[0]["tool_calls"][0]["arguments"] == {"q": "0", "limit": 2}
    with pytest.raises(UserError, match="no such file"):
        load_task_rows(str(tmp_path / "missing.parquet"))


def test_a_bad_row_names_the_row_and_field(tmp_path):
    from pact_cotrain.data.sources import tasks_from_rows
    from pact_cotrain.data.trace_format import TraceFormatError

    with pytest.raises(TraceFormatError, match=r"train_dataset: row 2: messages: must be a non-empty list"):
        tasks_from_rows([{"prompt": "fine"}, {"prompt": []}], "train_dataset")
    tasks = tasks_from_rows([{"prompt": "a"}, {"prompt": "b", "id": "x"}], "rows", from_arrow=False)
    assert [t.id for t in tasks] == ["row-1", "x"]
    # arguments stored as a JSON string (OpenAI's form, or a column Arrow could not type) are decoded
    traced = {"prompt": "a", "tools": [{"type": "function", "function": {"name": "f"}}],
              "trace": [{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": '{"x": 1}'}]},
                        {"role": "tool", "name": "f", "content": "ok"}, {"role": "assistant", "content": "done"}]}
    assert tasks_from_rows([traced], "rows")[0].trace[0]["tool_calls"][0]["arguments"] == {"x": 1}




def test_pact_trains_a_step_through_the_public_trainer_with_a_trl_environment(tmp_path, agent):
    from pact_cotrain import PACTTrainer

    tok = tiny_tokenizer()
    trainer = PACTTrainer(model=tiny_llama(tok), args=small_args(tmp_path, method="pact"), train_dataset=rows(True),
                          processing_class=tok, environment_factory=agent.Shop)
    assert [s["function"]["name"] for s in trainer.tasks[0].tools] == ["check_stock"]  # from the class
    trainer.train()
    assert trainer.state.global_step == 1
    logged = trainer.state.log_history[0]
    assert math.isfinite(logged["loss"]) and "rewards/env_reward/mean" in logged and "loss/sft" in logged


def test_grpo_with_tools_and_reward_funcs_on_untraced_rows(tmp_path, agent):
    """The model as a directory (loaded as TRL loads one), TRL's reward_weights over two functions."""
    from datasets import Dataset

    from pact_cotrain import PACTTrainer

    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    trainer = PACTTrainer(model=str(tmp_path / "tiny"), args=small_args(tmp_path, method="grpo", reward_weights=[2, 1]),
                          train_dataset=Dataset.from_list(rows(False)), tools=[agent.price],
                          reward_funcs=[agent.mentions_answer, "trace_match"])
    trainer.train()
    logged = trainer.state.log_history[0]
    assert trainer.state.global_step == 1 and "rewards/mentions_answer/mean" in logged
    assert "rewards/trace_match/mean" not in logged  # no trace: not applicable anywhere
    assert logged["reward"] == pytest.approx(2 * logged["rewards/mentions_answer/mean"])


def test_reward_functions_get_the_environments_and_faults_lose_only_their_episodes(tmp_path, agent, capsys):
    """TRL's `environments` (the user's instances, episode order); a reward that raises on one row loses that
    row's episodes: no gradient from them, counted and named in one line."""
    from pact_cotrain import PACTTrainer

    seen = []

    def asked(prompts, completions, environments, id, **kwargs):
        seen.extend(type(env).__name__ for env in environments)
        if "row-2" in id:
            raise ValueError("no answer column")
        return [float(len(env.asked)) for env in environments]

    tok = tiny_tokenizer()
    trainer = PACTTrainer(model=tiny_llama(tok), args=small_args(tmp_path, method="grpo"), train_dataset=rows(False, 2),
                          processing_class=tok, environment_factory=agent.Shop, reward_funcs=[asked])
    trainer.args.max_steps = 1
    batch = trainer._build_batch([{"task_index": i} for i in (0, 0, 1, 1)])
    assert seen[:4] == ["Shop"] * 4
    lost = [ep.task_id == "row-2" for ep in batch["episodes"]]
    assert lost == [False, False, True, True]
    assert batch["loss_mask"][2:].sum() == 0 and batch["loss_mask"][:2].sum() > 0  # no gradient from lost ones
    assert batch["advantages"][2:].abs().sum() == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "reward function" in line)
    assert "'asked'" in line and "task row-2" in line and "ValueError: no answer column" in line
    assert trainer._metrics["train"]["reward/lost_episodes"] == [2.0]


def test_the_same_trl_objects_go_into_trls_own_trainer_and_ours(tmp_path, agent):
    """One TRL-style class, tools list and reward function, unchanged, into TRL's GRPOTrainer (with a chat
    template TRL parses tool calls from: its own Qwen3 one) and into PACTTrainer; each trains a step."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen3_chat_template

    from pact_cotrain import PACTTrainer

    trl_tok = tiny_tokenizer(chat_template=qwen3_chat_template)
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), max_steps=1, num_generations=2, per_device_train_batch_size=2,
                      max_completion_length=16, max_tool_calling_iterations=1, report_to=[], use_cpu=True,
                      save_strategy="no", disable_tqdm=True, logging_steps=1)
    trl_trainer = GRPOTrainer(model=tiny_llama(trl_tok), args=args, train_dataset=Dataset.from_list(rows(False)),
                              processing_class=trl_tok, environment_factory=agent.Shop, tools=[agent.price],
                              reward_funcs=[agent.mentions_answer])
    assert {t.__name__ for t in trl_trainer.tools} == {"price", "check_stock"}
    assert trl_trainer.reward_func_names == ["mentions_answer", "Shop"]  # get_reward joined with weight 1
    trl_trainer.train()
    assert trl_trainer.state.global_step == 1

    tok = tiny_tokenizer()
    ours = PACTTrainer(model=tiny_llama(tok), args=small_args(tmp_path, method="grpo"),
                       train_dataset=Dataset.from_list(rows(False)), processing_class=tok,
                       environment_factory=agent.Shop, tools=[agent.price], reward_funcs=[agent.mentions_answer])
    assert [s["function"]["name"] for s in ours.tasks[0].tools] == ["price", "check_stock"]
    ours.train()
    logged = ours.state.log_history[0]
    assert ours.state.global_step == 1
    assert "rewards/mentions_answer/mean" in logged and "rewards/env_reward/mean" in logged


def test_a_row_tool_nothing_runs_is_refused_before_the_model(tmp_path, agent):
    from pact_cotrain import PACTTrainer

    bad = rows(True)[:1]
    bad[0]["trace"] = [{"role": "assistant", "content": "", "tool_calls": [{"name": "sell", "arguments": {}}]},
                       {"role": "tool", "name": "sell", "content": "ok"}, {"role": "assistant", "content": "done"}]
    with pytest.raises(UserError) as info:
        PACTTrainer(model="no-such-model-is-loaded", args=small_args(tmp_path), train_dataset=bad,
                    environment_factory=agent.Shop)
    assert "sell" in str(info.value) and "\n" not in str(info.value)


def test_own_tools_need_a_reward(tmp_path, agent):
    from pact_cotrain import PACTTrainer

    with pytest.raises(UserError, match="no reward for your own tools"):
        PACTTrainer(model="never-loaded", args=small_args(tmp_path, method="grpo"), train_dataset=rows(False),
                    tools=[agent.price])


def test_cli_trains_on_rows_without_benchmark_with_env_module_attr(tmp_path, agent, monkeypatch, capsys):
    from pact_cotrain import cli
    from pact_cotrain.recipes import train as train_recipe

    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(True)))
    tok = tiny_tokenizer()
    build = train_recipe.build_trainer
    monkeypatch.setattr(train_recipe, "build_trainer",
                        lambda cfg, **kw: build(cfg, model=tiny_llama(tok), tokenizer=tok))
    args = ["train", "--config", "pact", f"data.path={path}", "env=my_agent:Shop", "train.k=2",
            "train.prompts_per_step=2", "train.max_steps=1", "train.save_steps=0", "sampling.max_turns=2",
            "sampling.max_new_tokens_per_turn=12", "sampling.max_completion_tokens=48", "train.report_to=[]",
            "train.disable_tqdm=true", f"output_dir={tmp_path}/cli"]
    assert cli.main(args) == 0
    assert (tmp_path / "cli" / "final" / "config.json").is_file()
    # the same rows without env=: refused before the model loads, naming the file, line and field
    capsys.readouterr()
    assert cli.main(args[:4] + args[5:-1] + [f"output_dir={tmp_path}/cli2"]) == 2
    assert "tasks.jsonl:1: trace[0].tool_calls[0].name: calls 'check_stock'" in capsys.readouterr().err


def test_cli_bad_module_attr_is_one_line(tmp_path, monkeypatch, capsys):
    from pact_cotrain import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--config", "grpo", "env=nowhere:Env", f"output_dir={tmp_path}/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "env=nowhere:Env" in err and "cannot import module 'nowhere'" in err


def test_tools_list_and_call_from_a_config(tmp_path, agent, capsys):
    from pact_cotrain import cli

    config = tmp_path / "mine.yaml"
    config.write_text("env: my_agent:Shop\ntools: my_agent:TOOLS\nreward_funcs: [trace_match]\n")
    assert cli.main(["tools", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "2 tools" in out and "price(item)" in out and "check_stock(item)" in out and "- item (string, required)" in out
    assert cli.main(["tools", "call", "--config", str(config), "--tool", "check_stock", "--args", '{"item": "apple"}']) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "3"  # after reset(), as in an episode
    assert cli.main(["tools", "call", "--env", "my_agent:Shop", "--tool", "sell", "--args", "{}"]) == 2
    assert "no tool named 'sell'" in capsys.readouterr().err


def test_eval_on_own_tasks_reports_reward_and_each_function(tmp_path, agent, monkeypatch):
    from pact_cotrain import cli
    from pact_cotrain.eval import runner

    tok = tiny_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(True, n=3)))
    assert cli.main(["eval", "--model", str(model_dir), "--tasks", str(path), "--env", "my_agent:Shop",
                     "--reward-funcs", "my_agent:mentions_answer,trace_match", "--backend", "hf",
                     "--max-new-tokens", "8", "--max-turns", "6", "--out", str(tmp_path / "e")]) == 0
    results = json.loads((tmp_path / "e" / "results.json").read_text())["benchmarks"]["tasks"]
    assert results["n_episodes"] == 3 and results["settings"]["temperature"] == 0.0  # greedy
    # own tasks have no protocol to lower: --max-turns above the config's sampling.max_turns (4) is the limit
    assert results["settings"]["max_turns"] == 6
    metrics = results["metrics"]
    assert {"reward", "rewards/mentions_answer", "rewards/trace_match", "rewards/env_reward"} <= set(metrics)
    assert metrics["lost_episodes"] == 0.0
    episodes = [json.loads(line) for line in (tmp_path / "e" / "episodes_tasks.jsonl").read_text().splitlines()]
    # the reported reward is each episode's weighted sum, averaged (hand-checked from the episodes' own values)
    sums = [e["metrics"]["rewards/mentions_answer"] + e["metrics"]["rewards/trace_match"]
            + e["metrics"]["rewards/env_reward"] for e in episodes]
    assert metrics["reward"] == pytest.approx(sum(sums) / 3)
    # a reward is shown on its own scale, not as percent, and no all-n/a paper table precedes it
    md = (tmp_path / "e" / "results.md").read_text()
    assert "## Paper metrics" not in md and f"| {metrics['reward']:.3f} |" in md
