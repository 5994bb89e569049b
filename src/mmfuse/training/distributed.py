"""One process or many, through Hugging Face accelerate.

Launched plainly, everything here is a single process and ``Accelerator`` is a thin wrapper.
Launched with ``accelerate launch --num_processes N`` (DDP over gloo on CPU, nccl on GPU; FSDP
or DeepSpeed through ``accelerate config``), each process trains on its slice of every batch
(``split_batches``: the global batch is ``batch_size`` whatever N is, so a run with N
processes follows the same optimisation path as one process), gradients are averaged, and only
the main process writes files and prints.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.state import AcceleratorState, GradientState

from mmfuse.config import TrainConfig
from mmfuse.encoders.fast_path import gpu_bf16
from mmfuse.errors import ConfigError
from mmfuse.features.cache import Together
from mmfuse.training.privacy import is_private

PRECISIONS = ("auto", "no", "bf16", "fp16")


def on_cpu() -> bool:
    return not torch.cuda.is_available()


def process_state() -> PartialState:
    """This process's place in the run (initialises the process group when launched).

    On a machine without a GPU, processes started by ``torchrun`` (which is what
    ``accelerate launch --multi_gpu`` runs) join over gloo: accelerate needs ``cpu=True`` to
    see them as one CPU run rather than N separate ones.
    """
    return PartialState(cpu=on_cpu())


def is_distributed() -> bool:
    return process_state().num_processes > 1


def is_main_process() -> bool:
    return process_state().is_main_process


def encoding_together() -> Together | None:
    """Under ``accelerate launch``: every process encodes its share of the new features into
    the shared cache, and all wait for all before reading it (None in a single process)."""
    state = process_state()
    if state.num_processes == 1:
        return None
    return Together(state.process_index, state.num_processes, state.wait_for_everyone)


def mixed_precision(cfg: TrainConfig) -> str:
    """What ``cfg.precision`` means here: "auto" is bf16 on a GPU with bfloat16 units (half
    the memory traffic at float32's range) and full precision elsewhere (a CPU, an older GPU,
    and DP-SGD, which clips per-example gradients in full precision)."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if gpu_bf16() and not is_private(cfg) else "no"


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """An Accelerator for one training run: precision and gradient accumulation from ``cfg``."""
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{cfg.precision}'")
    if cfg.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("fp16 needs a GPU; on CPU use --precision bf16")
    if cfg.grad_accum < 1:
        raise ConfigError("grad_accum must be at least 1")
    if not is_distributed():
        # accelerate keeps its settings in process-wide singletons; a single process may train
        # several models with different settings (auto mode, tests), so start each afresh.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    process_state()
    return Accelerator(
        cpu=on_cpu(),
        mixed_precision=mixed_precision(cfg),
        gradient_accumulation_steps=cfg.grad_accum,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        step_scheduler_with_optimizer=False,
    )


def batch_size_fits(cfg: TrainConfig) -> None:
    """Split batches must divide evenly among processes."""
    processes = process_state().num_processes
    if cfg.batch_size % processes:
        raise ConfigError(f"batch_size {cfg.batch_size} must be divisible by the number of "
                          f"processes ({processes})")
