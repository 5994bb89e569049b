"""Auto mode's last candidate: every candidate's out-of-fold evidence weighed together.

On small data every candidate is judged by k-fold validation, so the linear members and the
networks all leave out-of-fold probabilities on the same rows. One combination of them
(ensemble selection or a stacked LR, ``ensemble/combine.py``) weighs what each adds: a network
that reads the images and a TF-IDF member that reads the words are right on different rows.
A network joins as its k fold models, averaged (``ensemble/networks.py``): the models its
evidence came from, so nothing is trained again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from mmfuse.config import Config
from mmfuse.encoders.base import Encoder
from mmfuse.ensemble.model import EnsembleModel, Member
from mmfuse.ensemble.networks import NetworkMember, share_frozen_encoders
from mmfuse.features.cache import FeatureCache
from mmfuse.fitted_model import FittedModel
from mmfuse.io import load_tensors, read_json, save_tensors, write_json

NAME = "ensemble of all candidates"
# In a run folder: what an interrupted search keeps of its members (``--resume``). linear/ is
# the linear ensemble's folder, <i>/ a network member's fold models; each has its
# out-of-fold probabilities beside it. Removed once the search has finished.
BAG_DIR = "auto-members"
OOF_FILE = "out-of-fold.safetensors"


class Bag:
    """The members collected as candidates finish, with their out-of-fold probabilities
    (N, C) on the judging rows, whose class ids are ``y`` (N,); the networks' frozen encoders
    shared (``share``)."""

    def __init__(self, y: np.ndarray, folder: Path | None = None) -> None:
        self.y = y
        self.folder = folder  # where members are kept as they come, if anywhere
        self.linear: EnsembleModel | None = None
        self.networks: list[tuple[NetworkMember, np.ndarray]] = []
        self.shared: dict[str, Encoder] = {}

    @classmethod
    def restore(cls, y: np.ndarray, folder: Path, finished: set[str], classes: list[str]
                ) -> Bag:
        """The members an interrupted search kept in ``folder``, of the candidates it
        ``finished`` (a member saved just before a kill, its row never written, is left to
        be fitted again)."""
        bag = cls(y, folder)
        linear = folder / "linear"
        if (linear / OOF_FILE).exists():
            bag.linear = EnsembleModel.load(linear)
            bag.linear.members_out_of_fold = list(load_tensors(linear / OOF_FILE)["oof"].numpy())
        index = 0
        while (folder / str(index) / OOF_FILE).exists():
            directory = folder / str(index)
            entry = read_json(directory / "member.json")
            if entry["network"] in finished:
                member = NetworkMember.load(entry["network"], directory, int(entry["folds"]),
                                            classes, bag.shared)
                bag.networks.append((member, load_tensors(directory / OOF_FILE)["oof"].numpy()))
            index += 1
        return bag

    def add_linear(self, model: EnsembleModel) -> None:
        self.linear = model
        if self.folder is not None:
            model.save(self.folder / "linear")
            save_tensors(self.folder / "linear" / OOF_FILE, {
                "oof": torch.from_numpy(np.stack(model.members_out_of_fold))})

    def share(self, fold: FittedModel) -> FittedModel:
        """A fold model kept for later, holding no copy of a frozen encoder."""
        return share_frozen_encoders(fold, self.shared)

    def add_network(self, name: str, folds: list[FittedModel], out_of_fold: np.ndarray) -> None:
        """A network whose every fold ran, with its out-of-fold probabilities (N, C)."""
        member = NetworkMember(name, folds)
        self.networks.append((member, out_of_fold))
        if self.folder is not None:
            directory = self.folder / str(len(self.networks) - 1)
            member.save(directory)
            write_json(directory / "member.json", member.entry())
            save_tensors(directory / OOF_FILE, {"oof": torch.from_numpy(out_of_fold)})

    def discard(self) -> None:
        """The kept members, once the search no longer needs them."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def members(self) -> tuple[list[Member], list[np.ndarray]]:
        """Every member, linear then network, and its out-of-fold probabilities (N, C)."""
        members: list[Member] = list(self.linear.members) if self.linear is not None else []
        oof = list(self.linear.members_out_of_fold) if self.linear is not None else []
        return members + [m for m, _ in self.networks], oof + [s for _, s in self.networks]

    def ensemble(self, config: Config, classes: list[str], cache: FeatureCache
                 ) -> tuple[EnsembleModel, dict[str, float]] | None:
        """Every member combined; None while no network finished every fold (it would be the
        linear ensemble again)."""
        members, oof = self.members()
        if not self.networks or len(members) < 2:
            return None
        encoders = self.linear.encoders if self.linear is not None else {}
        return EnsembleModel.combine(config, classes, members, oof, self.y, prune=True,
                                     cache=cache, encoders=encoders)
