"""The trainer: one loop for every task and model, split by phase.

    loop.py           train, extend: the entry points and the loop, top to bottom
    training_run.py   TrainingRun: one run's objects, a step, evaluation, checkpoints, the end
    resume.py         resuming a stopped run and extending a finished one
    summary.py        summary.json: transitions, milestones, final values
    engine_state.py   the clamp engine's state in a checkpoint
    optimizer.py      the optimizer and the learning-rate schedule
"""

from icl_lab.train.engine_state import engine_state, restore_engine_state
from icl_lab.train.loop import extend, train
from icl_lab.train.optimizer import lr_factor, make_optimizer
from icl_lab.train.resume import check_extension, record_extension, resumable_step
from icl_lab.train.summary import summarize
from icl_lab.train.training_run import NonFiniteLoss, TrainingRun, TrainResult, check_interventions_fired, run_record

__all__ = [
    "NonFiniteLoss",
    "TrainResult",
    "TrainingRun",
    "check_extension",
    "check_interventions_fired",
    "engine_state",
    "extend",
    "lr_factor",
    "make_optimizer",
    "record_extension",
    "restore_engine_state",
    "resumable_step",
    "run_record",
    "summarize",
    "train",
]
