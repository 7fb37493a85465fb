"""`pact plan`: tokens, FLOPs, peak memory per GPU and wall time of a training config, before running it.

shapes.py  model shapes (a local config.json, or a built-in table; nothing is downloaded)
tokens.py  tokens per pass of a step, from the config and the data's measured lengths
layout.py  micro-batches and packed-scoring masks of a step, as the trainer lays them out
cost.py    FLOPs, memory per device and time
run.py     a config (phases included) -> a Plan
report.py  the printout

benchmarks/plan_validate.py checks the time model against measured CPU steps and writes the
calibration file that `pact plan --calibration` reads.
"""
