"""The public, TRL-shaped face of PACTTrainer: `PACTConfig` and the normalisation of TRL's arguments.

    from pact_cotrain import PACTConfig, PACTTrainer

    args = PACTConfig(output_dir="runs/mine", method="pact", max_steps=20, num_generations=4,
                      prompts_per_step=2, max_completion_length=512, max_tool_calling_iterations=4)
    trainer = PACTTrainer(model="smollm2-135m-instruct", args=args, train_dataset=rows,
                          environment_factory=MyEnv, reward_funcs=[my_reward, "trace_match"])
    trainer.train()

`PACTConfig` is TRL's `GRPOConfig` (its names for what TRL has: output_dir, max_steps, learning_rate,
num_generations, max_completion_length, max_tool_calling_iterations, temperature, top_p, epsilon,
epsilon_high, reward_weights, report_to, seed, ...) plus the fields below. They map onto the
project's `MethodConfig` and `SamplingConfig` (`method_config`, `sampling_config`):

    method.name = method              method.reward = reward (when given)
    method.anchor_q = anchor_q        method.<field> = method_overrides[field] (any other MethodConfig field)
    method.eps_low = epsilon          method.eps_high = epsilon_high (epsilon when None, as in TRL)
    sampling.max_turns = max_tool_calling_iterations + 1   (assistant turns: the first and one per tool round;
                                                          None, TRL's "no limit": max_completion_length)
    sampling.max_completion_tokens = max_completion_length
    sampling.max_new_tokens_per_turn = max_new_tokens_per_turn
    sampling.temperature, top_p = temperature, top_p
    rows per step: prompts_per_step x num_generations = per_device_train_batch_size

`normalise(...)` turns TRL's constructor arguments into the internal ones the trainer ran on before
(tasks, an environment factory, an episode reward, ...). No import of the trainer here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from trl import GRPOConfig

from pact_cotrain.errors import UserError
from pact_cotrain.training.context_kl import CONTEXT_KL_STEPS


@dataclass
class PACTConfig(GRPOConfig):
    """TRL's GRPOConfig plus PACT's fields (module docstring for how they map)."""

    method: str = field(default="pact", metadata={"help": "pact, grpo, sft, sft_then_grpo, chord or hint_rollouts"})
    reward: str | None = field(default=None, metadata={
        "help": "built-in trajectory reward (solve_f1, ftrl_step, env, toolrl, matchtir, trace_match, answer_match) "
                "used when no reward_funcs are given; None: solve_f1 on benchmark rows"})
    anchor_q: float | None = field(default=None, metadata={"help": "PACT: share of prompts anchored (prompt-only GRPO)"})
    method_overrides: dict | None = field(default=None, metadata={"help": "any other MethodConfig field"})
    prompts_per_step: int | None = field(default=None, metadata={
        "help": "distinct prompts per step in each process; sets per_device_train_batch_size = this x num_generations"})
    max_new_tokens_per_turn: int = field(default=256, metadata={"help": "new tokens per assistant turn"})
    greedy_rollouts: bool = field(default=False, metadata={
        "help": "decode rollouts greedily (K identical rollouts a prompt: zero group advantages; for tests and checks)"})
    mcp_servers: list | None = field(default=None, metadata={"help": "[{name, command, args, env}] or [{name, url}]"})
    tool_timeout_s: float = field(default=30.0, metadata={"help": "per tool call"})
    max_tool_output_chars: int = field(default=16384, metadata={"help": "a tool output is cut to this many characters"})
    tool_sandbox: bool = field(default=False, metadata={"help": "run function tools in the sandbox worker"})
    rollout_backend: str = field(default="hf", metadata={"help": "hf or vllm"})
    rollout_dtype: str | None = field(default=None, metadata={"help": "roll out from a copy in this dtype; auto"})
    rollout_vllm_kwargs: dict | None = field(default=None, metadata={"help": "VLLMBackend / vllm.LLM arguments"})
    rollout_batch_size: int | None = field(default=None, metadata={
        "help": "rollouts decoded at once (a multiple of num_generations); None: the whole step's"})
    micro_batch_tokens: int | None = field(default=None, metadata={"help": "split a step's forward/backward"})
    forward_per_group: bool | None = field(default=None, metadata={"help": "None: per group on CPU only"})
    context_kl_steps: int = field(default=CONTEXT_KL_STEPS, metadata={
        "help": "log diag/kl_prompt_vs_trace_context_per_token every N steps (first step included): it costs a "
                "forward of x without gradient on rows scored only under [x; h]; 0: never"})

    def __post_init__(self):
        if self.prompts_per_step is not None:
            self.per_device_train_batch_size = self.prompts_per_step * self.num_generations
        if self.steps_per_generation is None:
            self.steps_per_generation = 1  # one generation batch is one optimiser step
        import torch

        if not torch.cuda.is_available():
            # TRL defaults bf16 to True, which transformers refuses on a CPU unless use_cpu is set; where bf16
            # is emulated it is also many times slower (training/precision.py). Unset, it means "where native".
            self.use_cpu = True
            if self.bf16 is None and not self.fp16:
                from pact_cotrain.training import precision

                self.bf16 = precision.bf16_is_fast()
        super().__post_init__()
        if self.per_device_train_batch_size % self.num_generations:
            raise UserError(f"per_device_train_batch_size={self.per_device_train_batch_size} is not a multiple of "
                            f"num_generations={self.num_generations}; set prompts_per_step instead")
        self.prompts_per_step = self.per_device_train_batch_size // self.num_generations
        method_config(self)  # a bad method name or field is refused now, not at the first step


def as_pact_config(args) -> PACTConfig:
    """`args` as a PACTConfig: TRL's own GRPOConfig is taken field by field (TRL's meaning kept)."""
    if args is None or isinstance(args, PACTConfig):
        return args
    if isinstance(args, GRPOConfig):
        # `per_device_train_batch_size` counts completions in TRL; prompts_per_step follows from it.
        values = {f.name: getattr(args, f.name) for f in fields(GRPOConfig) if f.init}
        values["generation_batch_size"] = None  # recomputed by __post_init__ with steps_per_generation=1
        return PACTConfig(**values)
    raise UserError(f"args must be a PACTConfig or TRL's GRPOConfig, got {type(args).__name__}")


def method_config(args):
    from pact_cotrain.training.methods import MethodConfig

    known = {f.name for f in fields(MethodConfig)}
    values = dict(args.method_overrides or {})
    unknown = sorted(set(values) - known)
    if unknown:
        from pact_cotrain.errors import did_you_mean

        raise UserError(f"method_overrides: unknown MethodConfig field {unknown[0]!r}{did_you_mean(unknown[0], known)}")
    # TRL's beta is the KL coefficient (TRL builds `ref_model` when it is > 0): method.beta, the same term
    values.update(name=args.method, eps_low=args.epsilon, beta=args.beta,
                  eps_high=args.epsilon_high if args.epsilon_high is not None else args.epsilon)
    if args.reward is not None:
        values["reward"] = args.reward
    if args.anchor_q is not None:
        values["anchor_q"] = args.anchor_q
    try:
        return MethodConfig(**values)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None


def sampling_config(args):
    from pact_cotrain.rollout.engine import SamplingConfig

    iterations = args.max_tool_calling_iterations
    return SamplingConfig(temperature=args.temperature, top_p=args.top_p, greedy=args.greedy_rollouts,
                          max_turns=iterations + 1 if iterations is not None else args.max_completion_length,
                          max_new_tokens_per_turn=args.max_new_tokens_per_turn,
                          max_completion_tokens=args.max_completion_length)


# ---------------------------------------------------------------------------------------------- tools


def is_user_factory(value) -> bool:
    from pact_cotrain.envs.user_env import UserEnvFactory

    return isinstance(value, UserEnvFactory)


def user_factory(args: PACTConfig, tools=None, environment_factory=None, mcp_servers=None):
    """The environment factory over a user's tools / environment class(es) / MCP servers (None when none
    is given). A ready `UserEnvFactory` passed as `environment_factory` is used as is."""
    if environment_factory is not None and is_user_factory(environment_factory):
        if tools or mcp_servers:
            raise UserError("a ready UserEnvFactory already holds its tools and MCP servers; pass them to it")
        return environment_factory
    mcp_servers = mcp_servers if mcp_servers is not None else args.mcp_servers
    if not tools and environment_factory is None and not mcp_servers:
        return None
    from pact_cotrain.envs.user_env import user_env_factory

    return user_env_factory(tools=list(tools) if tools else None, environment_factory=environment_factory,
                            mcp_servers=mcp_servers, max_steps=sampling_config(args).max_turns,
                            tool_timeout_s=args.tool_timeout_s, max_tool_output_chars=args.max_tool_output_chars,
                            sandbox=args.tool_sandbox)


def default_tools_for(factory):
    """`default_tools(row)` for data/sources.py: the schemas the factory runs for the row."""
    if factory is None:
        return None
    from pact_cotrain.data.trace_format import RESERVED_FIELDS, Task

    def tools(record: dict) -> list[dict]:
        metadata = {k: v for k, v in record.items() if k not in RESERVED_FIELDS}
        return factory.tool_schemas(Task(str(record.get("id")), record.get("messages") or [], [], None, metadata))

    return tools


def env_has_reward(factory) -> bool:
    return factory is not None and any(spec.has_reward for spec in getattr(factory, "envs", {}).values())


class RecordingFactory:
    """An environment factory that remembers the environments it made since the last `drain()`, so the
    reward functions get TRL's `environments` (the user's instances, in episode order)."""

    def __init__(self, factory):
        self.factory = factory
        self.created: list = []

    def __call__(self, task):
        env = self.factory(task)
        self.created.append(env)
        return env

    def drain(self) -> list:
        created, self.created = self.created, []
        return created


def routed_factory(user, tasks, max_turns: int):
    """Rows with a `benchmark` field run in that benchmark's environment (recipes.train.env_factory_for);
    the others in the user's environment."""
    from pact_cotrain.recipes.train import env_factory_for

    bench = env_factory_for(tasks, max_turns)
    if user is None:
        return bench

    def make(task):
        return bench(task) if task.metadata.get("benchmark") else user(task)

    return make


# ---------------------------------------------------------------------------------------------- rows and checks


def tasks_from_dataset(train_dataset, factory) -> list:
    """TRL's `train_dataset` (a `datasets.Dataset`, a list of row dicts, or a list of Tasks) as validated Tasks."""
    from pact_cotrain.data.sources import tasks_from_rows
    from pact_cotrain.data.trace_format import Task, TraceFormatError

    if train_dataset is None:
        raise UserError("train_dataset is required: a datasets.Dataset or a list of rows (messages or prompt, "
                        "optional trace, any other columns)")
    rows = train_dataset.to_list() if hasattr(train_dataset, "to_list") else list(train_dataset)
    if rows and all(isinstance(r, Task) for r in rows):
        return rows
    try:
        return tasks_from_rows(rows, "train_dataset", default_tools_for(factory),
                               from_arrow=hasattr(train_dataset, "to_list"))
    except TraceFormatError as exc:
        raise UserError(str(exc)) from None


def check_tasks(tasks: list, method, has_reward_funcs: bool, factory, where: str) -> None:
    """Every check that needs only the rows and the tools, before any model loads: the trace's needs of
    the method and reward, runnable tools (a benchmark's, or the user's, which must offer every tool
    the row or its trace names)."""
    from pact_cotrain.data.validate import check_trace_needs
    from pact_cotrain.recipes.train import check_executable_tools

    check_trace_needs(tasks, method.name, "user reward_funcs" if has_reward_funcs else method.reward, where)
    own = [t for t in tasks if not t.metadata.get("benchmark")] if factory is not None else []
    check_executable_tools([t for t in tasks if factory is None or t.metadata.get("benchmark")], method)
    for task in own:
        factory.check_task(task)


def episode_reward(method, funcs: list, weights, factory):
    """The trainer's episode reward: the user's functions (+ the environment's get_reward) in TRL's
    convention, or the built-in `method.reward`."""
    from pact_cotrain.rewards.episode import EpisodeReward
    from pact_cotrain.rewards.user import RewardFunctions

    env_reward = env_has_reward(factory)
    if funcs or env_reward:
        return RewardFunctions(funcs, weights, env_reward=env_reward)
    if factory is not None and method.name != "sft" and method.reward not in ("trace_match", "answer_match"):
        raise UserError(f"no reward for your own tools: pass reward_funcs (e.g. [\"trace_match\"] or your functions), "
                        f"give the environment a get_reward method, or set reward=trace_match|answer_match "
                        f"(method.reward={method.reward} reads a benchmark's metrics, which your tools do not have)")
    return EpisodeReward(method.reward)


def resolve_reward_funcs(reward_funcs) -> list:
    """Callables, built-in names (rewards/generic.py) or MODULE:ATTR strings. Reward models (a model id
    string, an nn.Module) are not supported: the trainer scores finished episodes, not texts."""
    from pact_cotrain.rewards.generic import BUILTIN_REWARDS
    from pact_cotrain.user_code import resolve_list

    funcs = resolve_list(reward_funcs, "reward_funcs", builtins=BUILTIN_REWARDS)
    for func in funcs:
        if not callable(func) or hasattr(func, "forward"):
            raise UserError(f"reward_funcs: {func!r} is not a reward function (reward models are not supported; "
                            f"use a function of prompts and completions)")
    return funcs


def load_model(model, processing_class, args: PACTConfig):
    """(model, tokenizer) from what TRL accepts as `model`: an id, a directory or registry name (loaded
    with `args.model_init_kwargs`, dtype float32 unless given, as TRL), or a model object."""
    from pact_cotrain.recipes.common import load_model_and_tokenizer, load_tokenizer

    if isinstance(model, str):
        init = dict(args.model_init_kwargs or {})
        dtype = init.pop("dtype", None) or init.pop("torch_dtype", None) or "float32"
        loaded, tokenizer = load_model_and_tokenizer(model, str(dtype).replace("torch.", ""),
                                                     init.pop("attn_implementation", None))
        return loaded, processing_class or tokenizer
    if processing_class is None:
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not name:
            raise UserError("processing_class is required with a model object that names no checkpoint")
        processing_class = load_tokenizer(name)
    return model, processing_class


def normalise(model, args, train_dataset, reward_funcs, processing_class, tools, environment_factory,
              mcp_servers) -> dict:
    """TRL's constructor arguments -> the trainer's internal ones (module docstring). Everything that can be
    refused is refused before the model loads."""
    import torch
    from datasets import Dataset

    from pact_cotrain.training import precision

    if args is None:
        name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "model")
        args = PACTConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-PACT", use_cpu=not torch.cuda.is_available())
    args = as_pact_config(args)
    method, sampling = method_config(args), sampling_config(args)
    funcs = resolve_reward_funcs(reward_funcs)
    if funcs and args.reward is not None:
        raise UserError(f"reward={args.reward} and reward_funcs both given: the reward_funcs decide the reward "
                        f"(add \"{args.reward}\" to them if it is a built-in name)")
    factory = user_factory(args, tools, environment_factory, mcp_servers)
    tasks = tasks_from_dataset(train_dataset, factory)
    check_tasks(tasks, method, bool(funcs), factory, "train_dataset")
    reward = episode_reward(method, funcs, args.reward_weights, factory)
    # The weights are the reward functions' (RewardFunctions sums them); GRPOTrainer itself sees one reward
    # function, the episode reward, and would refuse a weight per user function.
    args.reward_weights = None
    if factory is not None and hasattr(reward, "score_episodes"):  # TRL's `environments` for reward functions
        factory = RecordingFactory(factory)
        reward.environments_source = lambda recorder=factory: [getattr(env, "instance", None)
                                                               for env in recorder.drain()]
    model, processing_class = load_model(model, processing_class, args)
    vllm_kwargs, generation_batch_size = args.rollout_vllm_kwargs, args.rollout_batch_size
    if args.rollout_backend == "vllm":  # colocate defaults that fit beside training (rollout/vllm_defaults.py)
        import torch

        from pact_cotrain.rollout.vllm_defaults import colocate_engine_kwargs

        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        prompt_cap = None if context is None else int(context) - sampling.max_completion_tokens
        vllm_kwargs = colocate_engine_kwargs(vllm_kwargs, prompt_cap, sampling.max_completion_tokens,
                                             torch.cuda.is_available())
        generation_batch_size = None  # vLLM schedules its own batch: all of a process's rollouts at once
    rollout_dtype = args.rollout_dtype
    if rollout_dtype == "auto":
        rollout_dtype = precision.resolve_rollout_dtype("auto", precision.bf16_is_fast())
    return {
        "model": model, "args": args, "tasks": tasks, "processing_class": processing_class,
        "train_dataset": Dataset.from_dict({"prompt": [t.id for t in tasks], "task_index": list(range(len(tasks)))}),
        "env_factory": routed_factory(factory, tasks, sampling.max_turns), "method": method, "sampling": sampling,
        "reward": reward, "rollout_dtype": rollout_dtype, "rollout_backend": args.rollout_backend,
        "vllm_kwargs": vllm_kwargs, "forward_per_group": args.forward_per_group,
        "micro_batch_tokens": args.micro_batch_tokens, "generation_batch_size": generation_batch_size,
    }
