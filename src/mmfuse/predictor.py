"""The Predictor facade, in the scikit-learn manner: fit returns self, learned state ends in ``_``.

Thin: fitting, reading and saving are the Estimator's (which delegates to ``FittedModel``);
what is here turns the model's outputs into predictions, tables and files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmfuse.data.manifest import iter_manifest
from mmfuse.data.rows import Data
from mmfuse.data.shards import is_shard_spec, iter_shards
from mmfuse.estimator import Estimator
from mmfuse.fitted_model import PREDICT_CHUNK
from mmfuse.model_folder import VERSION  # noqa: F401  (mmfuse.__version__)
from mmfuse.progress import make_progress

__all__ = ["Data", "Predictor"]


class Predictor(Estimator):
    """Train, evaluate, predict and save an image+text model.

    >>> predictor = Predictor(Config()).fit("train.csv")       # doctest: +SKIP
    >>> predictor.predict("new.csv")                           # doctest: +SKIP
    """

    # ------------------------------------------------------------- predict
    def predict_proba(self, data: Data, *, base_dir: str | Path | None = None) -> pd.DataFrame:
        """One row per input row: a probability column per class (``prediction`` for regression)."""
        scores, _, rows, _ = self._forward(data, base_dir)
        columns = self.classes_ if self.classes_ is not None else ["prediction"]
        return pd.DataFrame(scores, columns=columns, index=rows["_row"].to_numpy())

    def predict(self, data: Data, *, base_dir: str | Path | None = None) -> np.ndarray:
        """Labels (classification, binary), label lists (multilabel) or values (regression)."""
        _, decoded, _, _ = self._forward(data, base_dir)
        return self.fitted_.task.decode(decoded, self.classes_)

    def predict_frame(self, data: Data, *, base_dir: str | Path | None = None) -> pd.DataFrame:
        """The input rows with ``prediction``, per-class probabilities and modality weights."""
        return self._prediction_table(*self._forward(data, base_dir))

    def predict_to_csv(
        self, data: Data, output: str | Path, *, base_dir: str | Path | None = None,
        chunk_rows: int = PREDICT_CHUNK,
    ) -> int:
        """``predict_frame`` streamed: the manifest is read, validated, predicted and written
        ``chunk_rows`` rows at a time, so memory does not grow with its length. The CSV appears
        (atomically) only when complete. Returns the number of rows written."""
        self._check_fitted()
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        written = 0
        try:
            with open(partial, "w", newline="") as handle, make_progress(False) as progress:
                task = progress.add_task("Predicting", total=None, status="rows")
                chunks = (iter_shards(data, self.config.data, self._extract_root(data), chunk_rows)
                          if is_shard_spec(data) else iter_manifest(data, chunk_rows, base_dir))
                for chunk in chunks:
                    table = self._prediction_table(*self._forward(chunk, base_dir))
                    table.to_csv(handle, index=False, header=written == 0)
                    written += len(table)
                    progress.advance(task, len(chunk))
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
        return written

    def _prediction_table(self, scores: np.ndarray, decoded: np.ndarray, rows: pd.DataFrame,
                          weights: np.ndarray | None) -> pd.DataFrame:
        out = pd.DataFrame({"row": rows["_row"].to_numpy()})
        labels = self.fitted_.task.decode(decoded, self.classes_)
        out["prediction"] = ["|".join(x) if isinstance(x, list) else x for x in labels]
        for i, name in enumerate(self.classes_ or []):
            out[f"p_{name}"] = scores[:, i]
        for i, name in enumerate(self.model_.modalities if weights is not None else []):
            out[f"weight_{name}"] = weights[:, i]
        return out

    def _forward(self, data: Data, base_dir: str | Path | None
                 ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray | None]:
        """Probabilities, decoded predictions, the validated rows and modality weights."""
        self._check_fitted()
        self.fitted_.task.require_predictions("predict")
        rows = self._rows(data, base_dir, require_labels=False)
        scores, decoded, weights = self.outputs(rows)
        return scores, decoded, rows, weights

    def outputs(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Probabilities (N, C) (values for regression), decoded outputs (class ids, label
        indicators or values) and modality weights (N, M) or None, for rows from ``read``."""
        self._check_fitted()
        return self.fitted_.predict(rows)

    def logits(self, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw logits (N, C) and modality weights (N, M) or None for rows from ``read``."""
        self._check_fitted()
        return self.fitted_.logits(rows)

    def calibrate(self, data: Data, *, base_dir: str | Path | None = None) -> float:
        """Fit the probability temperature on held-out labelled data, and for a metric that
        reads labels the labels' decision (``tasks/decision.py``); returns the temperature.
        ``save`` stores both with the weights."""
        return self.fitted_.calibrate(self.read(data, base_dir=base_dir))
