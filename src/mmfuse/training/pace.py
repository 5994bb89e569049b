"""How long training will take, said once early in the first epoch, with the numbers.

Progress bars are off where output is not a terminal (logs, `nohup`, CI), and a long run
should not leave its user guessing: after the first ``PACE_BATCHES`` batches of a long epoch
the pace so far gives the time of an epoch and of the planned epochs, what a time limit leaves,
and, where encoders are fine-tuned, why it is slow (no feature cache: every input is decoded
and encoded again each epoch).
"""

from __future__ import annotations

import time

from mmfuse.deadline import Deadline

PACE_BATCHES = 20  # batches timed before the estimate (the first few also warm up)
LONG_EPOCH_STEPS = 200  # shorter epochs are over before the estimate would help


def duration(seconds: float) -> str:
    """12 s, 4 min 05 s, 3 h 20 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def pace_note(batches: int, seconds: float, *, steps_per_epoch: int, rows_per_batch: int,
              epochs: int, trained: list[str], time_left: float | None) -> str:
    """What ``batches`` batches of ``rows_per_batch`` rows in ``seconds`` say about an epoch of
    ``steps_per_epoch`` batches and ``epochs`` of them."""
    per_batch = seconds / max(batches, 1)
    epoch_s = per_batch * steps_per_epoch
    note = (f"Training pace: about {duration(epoch_s)} an epoch "
            f"({rows_per_batch / max(per_batch, 1e-9):,.0f} rows/s), up to "
            f"{duration(epoch_s * epochs)} for {epochs} epochs (early stopping may end sooner).")
    if time_left is not None and time_left < epoch_s * epochs:
        note += f" The time limit leaves about {time_left / epoch_s:.1f} epochs."
    if trained:
        note += (f" The {' and '.join(trained)} encoder{'s' if len(trained) > 1 else ''} being "
                 "trained cannot read the feature cache: every input is decoded and encoded "
                 "again each epoch (frozen encoders are computed once).")
    return note


class Pace:
    """Times the first batches of the first epoch this process trains; ``note`` returns the
    estimate once, when there is one to give."""

    def __init__(self, steps_per_epoch: int, rows_per_batch: int, epochs: int,
                 trained: list[str]) -> None:
        self.steps_per_epoch, self.rows_per_batch = steps_per_epoch, rows_per_batch
        self.epochs, self.trained = epochs, trained
        self.started: float | None = None
        self.done = steps_per_epoch < LONG_EPOCH_STEPS

    def start(self) -> None:
        if not self.done:
            self.started = time.perf_counter()

    def note(self, batches: int, deadline: Deadline | None) -> str | None:
        """After ``batches`` batches of this epoch: the estimate, once."""
        if self.done or self.started is None or batches < PACE_BATCHES:
            return None
        self.done = True
        time_left = deadline.remaining() if deadline is not None else None
        return pace_note(batches, time.perf_counter() - self.started,
                         steps_per_epoch=self.steps_per_epoch, rows_per_batch=self.rows_per_batch,
                         epochs=self.epochs, trained=self.trained, time_left=time_left)
