"""PACTTrainer overrides GRPOTrainer at a few points and relies on a few of its attributes. This test
fails when TRL changes any of them, so a TRL upgrade is a deliberate change, not a silent break."""

import inspect

import trl
from trl import GRPOTrainer


def params(fn):
    return list(inspect.signature(fn).parameters)


def test_trl_minor_version_is_the_pinned_one():
    assert trl.__version__.startswith("1.16."), trl.__version__


def test_overridden_method_signatures():
    assert params(GRPOTrainer._prepare_inputs) == ["self", "generation_batch"]
    assert params(GRPOTrainer.compute_loss) == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]
    assert params(GRPOTrainer._save_checkpoint) == ["self", "model", "trial"]
    assert params(GRPOTrainer.training_step) == ["self", "model", "inputs", "num_items_in_batch"]  # micro-batches
    assert params(GRPOTrainer.log) == ["self", "logs", "start_time"]  # metrics averaged over processes first
    assert params(GRPOTrainer._get_train_sampler) == ["self", "dataset"]  # the resumable sampler
    assert params(GRPOTrainer.train)[:2] == ["self", "resume_from_checkpoint"]


def test_constructor_arguments_we_pass():
    wanted = {"model", "reward_funcs", "args", "train_dataset", "processing_class", "peft_config"}
    assert wanted <= set(params(GRPOTrainer.__init__))


def test_attributes_we_rely_on_are_set_by_trl():
    source = inspect.getsource(GRPOTrainer)
    for attribute in ("self._step", "self._buffered_inputs", "self.num_iterations", "self.num_generations",
                      "self._metrics"):
        assert attribute in source, attribute
