"""Training batches from the mixture sampler, with the sampler state of the last batch actually trained on.

Every rank runs the same sampler and keeps its slice of each global batch (see :mod:`lmpipe.training`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from lmpipe.mixing.config import MixtureConfig

if TYPE_CHECKING:
    from lmpipe.mixture import TokenIndex, WeightSchedule


class WindowSampler(Protocol):
    """What training needs from a sampler (``lmpipe.mixture.MixtureSampler`` is one): windows of seq_len + 1."""

    def __iter__(self) -> Iterator[np.ndarray]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


SamplerFactory = Callable[[str], WindowSampler]  # split name ("train" | "val" | "val/<domain>") -> a fresh sampler


def vocab_and_special_ids(index: TokenIndex, tokenizer_dir: str | Path) -> tuple[int, dict[str, int | None]]:
    """The model's vocab size (the index's or the tokenizer's, whichever is larger) and its special token ids
    for training on ``index`` packed with the tokenizer at ``tokenizer_dir``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return max(index.vocab_size, len(tok)), {"bos": tok.bos_token_id, "eos": index.eos_id, "pad": tok.pad_token_id}


VAL_DOMAIN = "val/"  # split name prefix of a one-domain validation sampler: "val/<domain>"


class MixtureSamplers:
    """Samplers over ``data/tokens`` by split name: ``"train"`` the configured mixture; ``"val"`` the same
    weights over the held-out domains big enough for one window (small domains may have no held-out window);
    ``"val/<domain>"`` one held-out domain alone, for every domain in :attr:`val_domains` (whatever its
    training weight: a domain left out of a continual-pretraining mixture is the one whose forgetting counts).
    ``meco_windows``: the first that many training windows come from the MeCo-prefixed documents
    (:class:`lmpipe.conditioning.meco.CooldownSampler`), the rest from the plain ones.
    """

    def __init__(self, index: TokenIndex, mixture: MixtureConfig, seq_len: int, seed: int, label: str,
                 meco_windows: int | None = None) -> None:
        self.index, self.mixture, self.seq_len, self.seed, self.label = index, mixture, seq_len, seed, label
        self.meco_windows = meco_windows
        self.val_domains = [d for d in index.domains("val") if index.tokens(d, "val") > seq_len]

    def __call__(self, split: str) -> WindowSampler:
        from lmpipe.mixture import MixtureSampler

        index, mixture, seq_len, seed = self.index, self.mixture, self.seq_len, self.seed
        if split == "train" and self.meco_windows is not None:
            from lmpipe.conditioning.meco import CooldownSampler, meco_split

            if meco_split("train") not in index.splits:
                raise ValueError(f"condition.meco is on but {index.root} has no {meco_split('train')!r} split: "
                                 "rerun the tokenize stage with condition.meco.enabled")
            return CooldownSampler(MixtureSampler.from_config(index, mixture, seq_len, seed, meco_split("train")),
                                   MixtureSampler.from_config(index, mixture, seq_len, seed, "train"),
                                   self.meco_windows)
        if split == "train":
            if mixture.sampler == "rs2":
                from lmpipe.mixing.rs2 import RS2Sampler

                return RS2Sampler(index, mixture.weights, seq_len, seed, "train", missing=mixture.missing)
            return MixtureSampler.from_config(index, mixture, seq_len, seed, "train")
        if split.startswith(VAL_DOMAIN):
            return MixtureSampler(self.index, {split[len(VAL_DOMAIN):]: 1.0}, self.seq_len, self.seed, "val")
        weights = {d: w for d, w in self.mixture.weights.items() if d in self.val_domains and w > 0}
        if not weights:
            raise ValueError(f"no weighted domain has a {split} window of {self.seq_len + 1} tokens in {self.label}")
        return MixtureSampler(self.index, weights, self.seq_len, self.seed, split)


def mixture_samplers(
    tokens_dir: str | Path | TokenIndex, mixture: MixtureConfig, seq_len: int, seed: int,
    meco_windows: int | None = None,
) -> MixtureSamplers:
    """:class:`MixtureSamplers` over ``tokens_dir``, which may also be a ready ``TokenIndex`` (e.g.
    ``TokenIndex.merge`` of several directories)."""
    from lmpipe.mixture import TokenIndex

    index = tokens_dir if isinstance(tokens_dir, TokenIndex) else TokenIndex.load(tokens_dir)
    return MixtureSamplers(index, mixture, seq_len, seed, str(tokens_dir), meco_windows)


class GlobalBatches(IterableDataset):
    """(x, y) micro-batches for one rank, cut from global batches of one shared sampler.

    Remembers the sampler state after each of the last few batches it produced, keyed by the absolute
    number of batches produced, so the state after batch *n* can be checkpointed while the loader has already
    prefetched batch *n + 1*.
    """

    KEEP = 16  # the loader runs at most a couple of batches ahead of training

    def __init__(
        self,
        make_sampler: SamplerFactory,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        resume: dict[str, Any] | None = None,
        split: str = "train",
        schedule: WeightSchedule | None = None,
    ) -> None:
        self.make_sampler, self.split = make_sampler, split
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.resume, self.schedule = resume, schedule
        self.states: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = self.make_sampler(self.split)
        if self.schedule is not None:  # online reweighting: weights change at the steps the schedule names
            if not hasattr(sampler, "use_schedule"):
                raise ValueError(f"{type(sampler).__name__} has no domain weights to reweight")
            sampler.use_schedule(self.schedule)
        produced = 0
        if self.resume is not None:
            sampler.load_state_dict(self.resume["sampler"])
            produced = self.resume["batches"]
        self._remember(produced, sampler)
        windows = iter(sampler)
        n_global = self.batch_size * self.world_size
        while True:
            rows = [next(windows, None) for _ in range(n_global)]
            if rows[-1] is None:  # a finite sampler ran dry: the epoch ends here
                return
            block = torch.from_numpy(np.stack(rows[self.rank :: self.world_size]).astype(np.int64))
            produced += 1
            self._remember(produced, sampler)
            yield block[:, :-1], block[:, 1:]

    def _remember(self, produced: int, sampler: WindowSampler) -> None:
        state = {"batches": produced, "sampler": sampler.state_dict()}
        if hasattr(sampler, "epochs_consumed"):
            state["epochs"] = sampler.epochs_consumed()
        self.states[produced] = state
        while len(self.states) > self.KEEP:
            self.states.popitem(last=False)

    def state_after(self, batches: int) -> dict[str, Any]:
        if batches not in self.states:
            raise RuntimeError(f"sampler state after batch {batches} is gone (have {list(self.states)})")
        return self.states[batches]


class TokenDataModule(L.LightningDataModule):
    def __init__(
        self, make_sampler: SamplerFactory, batch_size: int, val_batches: int, val_domain_batches: int = 0
    ) -> None:
        super().__init__()
        self.make_sampler = make_sampler
        self.batch_size, self.val_batches, self.val_domain_batches = batch_size, val_batches, val_domain_batches
        self.train_batches: GlobalBatches | None = None
        self.weight_schedule: WeightSchedule | None = None  # set by an online reweighting callback
        self._resume: dict[str, Any] | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._val_domains: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        self.train_batches = GlobalBatches(self.make_sampler, self.batch_size, rank, world, self._resume,
                                           schedule=self.weight_schedule)
        return DataLoader(self.train_batches, batch_size=None, num_workers=0)

    def validation_set(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed held-out set: the first val_batches global batches of a fresh val sampler, drawn once."""
        if self._val is None:
            rank, world = self._rank()
            it = iter(GlobalBatches(self.make_sampler, self.batch_size, rank, world, split="val"))
            self._val = [b for _, b in zip(range(self.val_batches), it, strict=False)]
            if not self._val:
                raise ValueError("the validation split yielded no full batch (too little held-out data?)")
        return self._val

    def domain_validation_sets(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per held-out domain, its first ``val_domain_batches`` global batches, drawn once (none when 0 or
        when the factory names no domains)."""
        if self._val_domains is None:
            rank, world = self._rank()
            n = self.val_domain_batches
            self._val_domains = {}
            for d in getattr(self.make_sampler, "val_domains", ()) if n else ():
                it = iter(GlobalBatches(self.make_sampler, self.batch_size, rank, world, split=VAL_DOMAIN + d))
                self._val_domains[d] = [b for _, b in zip(range(n), it, strict=False)]
        return self._val_domains

    def consumed_batches(self) -> int:
        # Checkpoints are taken on optimizer-step boundaries: steps × micro-batches per step.
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def state_dict(self) -> dict[str, Any]:
        if self.train_batches is None or self.trainer is None:
            return dict(self._resume or {})
        return self.train_batches.state_after(self.consumed_batches())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = state or None
