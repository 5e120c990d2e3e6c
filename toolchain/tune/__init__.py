"""``toolchain tune``: architecture search over the seed CNN families for the most accurate int8 model that fits
a board (search space: ``space``; one trial: ``objective``; the Optuna study, determinism and resuming: ``study``;
local workers: ``workers``; Pareto front: ``pareto``; outputs: ``report``; the driver: ``run``)."""
