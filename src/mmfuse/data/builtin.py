"""Built-in datasets, shipped inside installed packages (no download at run time)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from mmfuse.config import DataConfig
from mmfuse.registry import Registry


@dataclass
class BuiltinDataset:
    """Named splits plus the column mapping that reads them."""

    splits: dict[str, pd.DataFrame]
    data: DataConfig
    description: str


DATASETS: Registry[BuiltinDataset] = Registry("dataset")


@DATASETS.register("easy-vqa", "5,000 shape images, 48k questions, 13 answers (image + question)")
def easy_vqa() -> BuiltinDataset:
    """easy-VQA: neither the image nor the question alone gives the answer."""
    import easy_vqa as ev

    def frame(
        questions: Callable[[], tuple[list, list, list]], images: Callable[[], dict[int, str]]
    ) -> pd.DataFrame:
        texts, answers, image_ids = questions()
        paths = images()
        result = pd.DataFrame(
            {"image": [paths[i] for i in image_ids], "question": texts, "answer": answers}
        )
        result.attrs["source"] = "easy-vqa"
        result.attrs["base_dir"] = "/"
        return result

    return BuiltinDataset(
        splits={
            "train": frame(ev.get_train_questions, ev.get_train_image_paths),
            "test": frame(ev.get_test_questions, ev.get_test_image_paths),
        },
        data=DataConfig(image_cols=["image"], text_cols=["question"], label_col="answer"),
        description="easy-VQA (MIT): image + question -> one of 13 answers",
    )
