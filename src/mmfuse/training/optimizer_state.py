"""Optimizer state as tensors + JSON, so a training checkpoint needs no pickle."""

from __future__ import annotations

import json
from typing import Any

import torch


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """torch optimizer state -> (tensors, JSON of everything else), so no pickle is needed."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, json.dumps({"param_groups": state["param_groups"], "scalars": scalars})


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: str) -> dict[str, Any]:
    info = json.loads(meta)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in info["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}
