"""Auto mode's last candidate: every candidate's out-of-fold evidence weighed together.

On small data every candidate is judged by k-fold validation, so the linear members and the
networks all leave out-of-fold probabilities on the same rows. One combination of them
(ensemble selection or a stacked LR, ``ensemble/combine.py``) weighs what each adds: a network
that reads the images and a TF-IDF member that reads the words are right on different rows.
A network joins as its k fold models, averaged (``ensemble/networks.py``): the models its
evidence came from, so nothing is trained again.

A network judged on fewer folds (the fine-tuned MiniLM, whose k folds would not fit the time
limit) has evidence on fewer rows. It cannot join the combination weighed on every row, so a
second one is weighed on the rows every member covered (the first fold's, at least), with it.
Judged on fewer rows, it is kept only by beating the first there by more than the noise
(``judge.py``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
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
SHARED_NAME = "ensemble of all candidates on their shared rows"
# Fewer shared rows than this weigh no second combination: its nested folds would be too
# small to fit a stacker or to judge a selection.
MIN_SHARED_ROWS = 100
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
        # each network with its out-of-fold probabilities (N, C) and the rows they cover (N,)
        self.networks: list[tuple[NetworkMember, np.ndarray, np.ndarray]] = []
        self.shared: dict[str, Encoder] = {}
        # each network's config and how many seeds its member averages (``repeat``)
        self.configs: dict[str, Config] = {}
        self.seeds: dict[str, int] = {}

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
                kept = {k: v.numpy() for k, v in load_tensors(directory / OOF_FILE).items()}
                # (members kept before partly judged networks joined covered every row)
                covered = kept.get("covered", np.ones(len(y), dtype=bool))
                bag.networks.append((member, kept["oof"], covered))
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

    def add_network(self, name: str, folds: list[FittedModel], out_of_fold: np.ndarray,
                    covered: np.ndarray, *, config: Config | None = None) -> None:
        """A network, as the models of the folds it ran, with its out-of-fold probabilities
        (N, C) on the rows ``covered`` (N,) bool: those its fold models did not see;
        ``config``: what fitted it (for ``repeat``)."""
        self.networks.append((NetworkMember(name, folds), out_of_fold, covered))
        if config is not None:
            self.configs[name], self.seeds[name] = config, 1
        self._keep(len(self.networks) - 1)

    def repeat(self, name: str, folds: list[FittedModel], out_of_fold: np.ndarray) -> None:
        """The network ``name`` fitted again on the same folds with another seed: its member
        averages every seed's fold models, its out-of-fold probabilities every seed's (still
        out of fold: each row's come from models that did not see it)."""
        index = next(i for i, (m, _, _) in enumerate(self.networks) if m.name == name)
        member, before, covered = self.networks[index]
        seeds = self.seeds[name]
        self.networks[index] = (NetworkMember(name, member.folds + folds),
                                (before * seeds + out_of_fold) / (seeds + 1), covered)
        self.seeds[name] = seeds + 1
        self._keep(index)

    def _keep(self, index: int) -> None:
        """Network ``index`` in the folder, for a resumed search (if there is a folder)."""
        if self.folder is None:
            return
        member, out_of_fold, covered = self.networks[index]
        directory = self.folder / str(index)
        member.save(directory)
        write_json(directory / "member.json", member.entry())
        save_tensors(directory / OOF_FILE, {"oof": torch.from_numpy(out_of_fold),
                                            "covered": torch.from_numpy(covered)})

    def discard(self) -> None:
        """The kept members, once the search no longer needs them."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def members(self, partial: bool = False) -> tuple[list[Member], list[np.ndarray]]:
        """The members, linear then network, and their out-of-fold probabilities (N, C): those
        with evidence on every row, and with ``partial`` those on fewer too."""
        members: list[Member] = list(self.linear.members) if self.linear is not None else []
        oof = list(self.linear.members_out_of_fold) if self.linear is not None else []
        networks = [(m, s) for m, s, covered in self.networks if partial or covered.all()]
        return members + [m for m, _ in networks], oof + [s for _, s in networks]

    def shared_rows(self) -> np.ndarray:
        """(N,) bool: the rows every network's evidence covers."""
        return np.logical_and.reduce([covered for _, _, covered in self.networks])

    def ensembles(self, config: Config, classes: list[str], cache: FeatureCache
                  ) -> Iterator[tuple[str, EnsembleModel, dict[str, float], np.ndarray]]:
        """Every member combined: on every row, from the members judged on every fold, once a
        network is among them (else it would be the linear ensemble again); and on the shared
        rows, with the networks judged on fewer folds, where there are any. Each as (name,
        model, its scores, the judging rows (n,) it was weighed and judged on), combined as
        it is asked for."""
        encoders = self.linear.encoders if self.linear is not None else {}
        members, oof = self.members()
        if any(covered.all() for _, _, covered in self.networks) and len(members) >= 2:
            model, scores = EnsembleModel.combine(config, classes, members, oof, self.y,
                                                  prune=True, cache=cache, encoders=encoders)
            yield NAME, model, scores, np.arange(len(self.y))
        everyone, oof = self.members(partial=True)
        rows = np.flatnonzero(self.shared_rows()) if self.networks else np.arange(0)
        if len(everyone) > len(members) >= 1 and len(rows) >= MIN_SHARED_ROWS:
            model, scores = EnsembleModel.combine(config, classes, everyone,
                                                  [p[rows] for p in oof], self.y[rows],
                                                  prune=True, cache=cache, encoders=encoders)
            yield SHARED_NAME, model, scores, rows
