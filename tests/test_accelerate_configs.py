"""The accelerate launch files (configs/accelerate/*.yaml) load and launch-validate with the installed
accelerate: each is read by `accelerate launch`'s own config loader and argument checks, every key
under fsdp_config / deepspeed_config is one `accelerate launch` knows (a misspelt key would otherwise
be ignored silently), and the environment it hands the training processes is the one intended."""

from importlib import resources

import pytest

pytest.importorskip("accelerate")
from accelerate.commands.config.config_args import load_config_from_file  # noqa: E402
from accelerate.commands.launch import _validate_launch_command, launch_command_parser  # noqa: E402
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env  # noqa: E402

FOLDER = resources.files("pact_cotrain").joinpath("configs/accelerate")
FILES = ("ddp", "fsdp2", "zero2", "zero3", "multinode_zero3")


def _path(name):
    return str(FOLDER.joinpath(f"{name}.yaml"))


def _launch(name, *flags):
    """(launch args, config) as `accelerate launch --config_file FILE [flags] train.py` sees them, and the
    environment it would give the processes."""
    parser = launch_command_parser()
    args, config, _ = _validate_launch_command(parser.parse_args(["--config_file", _path(name), *flags, "train.py"]))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(config.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, config, env


def test_every_file_is_tested():
    assert {f.name[:-5] for f in FOLDER.iterdir() if f.name.endswith(".yaml")} == set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_loads_and_every_key_is_known(name):
    config = load_config_from_file(_path(name))
    assert config.mixed_precision == "bf16" and config.num_processes >= 2
    known = set(vars(launch_command_parser().parse_args(["train.py"])))
    nested = [k if k.startswith("fsdp") else f"fsdp_{k}" for k in config.fsdp_config] + list(config.deepspeed_config)
    assert [k for k in nested if k not in known] == []
    _launch(name)  # accelerate's own checks pass and it can build the processes' environment


def test_ddp():
    args, _, env = _launch("ddp")
    assert args.multi_gpu and not args.use_deepspeed and not args.use_fsdp
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp2_is_version_2_and_saves_whole_weights():
    args, config, env = _launch("fsdp2")
    assert config.fsdp_config["fsdp_version"] == 2 and env["FSDP_VERSION"] == "2"
    # transformers' Trainer.save_model writes no weights under SHARDED_STATE_DICT
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"


@pytest.mark.parametrize("name,stage", [("zero2", "2"), ("zero3", "3"), ("multinode_zero3", "3")])
def test_deepspeed_stage(name, stage):
    args, config, env = _launch(name)
    assert args.use_deepspeed and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == stage
    if stage == "3":  # final/ must be a loadable HF model: gather the 16-bit weights on save
        assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"


def test_multinode_placeholders_and_overrides():
    config = load_config_from_file(_path("multinode_zero3"))
    assert config.num_machines >= 2 and config.num_processes % config.num_machines == 0
    assert config.main_process_ip and config.main_process_port and config.machine_rank == 0
    # each machine runs the same command with its own rank and machine 0's address
    args, _, env = _launch("multinode_zero3", "--machine_rank", "1", "--main_process_ip", "192.0.2.7")
    assert (args.machine_rank, args.main_process_ip) == (1, "192.0.2.7")
    # torchrun on each machine ("standard" launcher): 2 nodes x 8 processes, rendezvous at machine 0
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "8")
    assert args.rdzv_endpoint == "192.0.2.7:29500"


def test_each_file_says_what_it_needs_and_the_deepspeed_extra_exists():
    """A ZeRO file names the `deepspeed` extra (accelerate refuses to start one without DeepSpeed), and
    pyproject.toml has that extra."""
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(req.startswith("deepspeed") for req in extras["deepspeed"])
    for name in FILES:
        text = FOLDER.joinpath(f"{name}.yaml").read_text()
        assert "# Needs:" in text, name
        uses_deepspeed = "distributed_type: DEEPSPEED" in text
        assert ('pact-cotrain[deepspeed]' in text) == uses_deepspeed, name
