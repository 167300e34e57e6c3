"""The tokenizer: a byte-level BPE trained on the train split only (no held-out text shapes the vocabulary), or
any local Hugging Face tokenizer directory reused; saved in HF format. :class:`Encoder` is the packing view.

:func:`prepare_tokenizer` trains or reuses it unless the tokenizer directory already holds the one these
inputs make (a fingerprint of the recipe, the corpus and the split, kept in the stage's state directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmpipe.docsplit import SplitPlan, id_hash
from lmpipe.documents import iter_batches, read_manifest, sha256_file
from lmpipe.tokenization_config import TokenizeConfig

_SAMPLE_SALT = b"lmpipe/toksample"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (ids < vocab_size <= 65535), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


class Encoder:
    """The packing view of a saved tokenizer: ids without special-token parsing, EOS after each doc.

    Use this (not ``AutoTokenizer(text)``) wherever text must map to the same ids as the token files:
    HF's call parses special-token strings inside the text, which this deliberately does not.
    """

    def __init__(self, tokenizer: Any, eos_id: int) -> None:
        self.tok = tokenizer
        self.tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a document stays plain text
        self.eos_id = eos_id
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.dtype = token_dtype(self.vocab_size)

    @classmethod
    def load(cls, tokenizer_dir: str | Path) -> Encoder:
        from tokenizers import Tokenizer

        tokenizer_dir = Path(tokenizer_dir)
        cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
        eos = cfg.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        eos_id = tok.token_to_id(eos) if eos else None
        if eos_id is None:
            raise ValueError(f"{tokenizer_dir}: eos_token {eos!r} is not in the vocabulary")
        return cls(tok, eos_id)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def encode_docs(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Encode a batch (parallel inside ``tokenizers``) → (ids with EOS after each doc, per-doc lengths
        including the EOS)."""
        # encode_batch_fast skips character offsets, which packing never needs
        encs = self.tok.encode_batch_fast(texts, add_special_tokens=False)
        flat: list[int] = []
        lengths: list[int] = []
        eos = self.eos_id
        for e in encs:
            ids = e.ids
            flat.extend(ids)
            flat.append(eos)
            lengths.append(len(ids) + 1)
        return np.array(flat, dtype=self.dtype), lengths


def _specials(cfg: TokenizeConfig) -> list[str]:
    return [cfg.eos_token, *([cfg.pad_token] if cfg.pad_token else []), *cfg.extra_special_tokens]


def train_tokenizer(texts: Iterable[str], cfg: TokenizeConfig, length: int | None = None) -> Any:
    """Byte-level BPE from a stream of texts (``tokenizers`` consumes the iterator in chunks)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # no prefix space: decode(encode(x)) == x exactly, and documents are not shifted by a phantom space
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=_specials(cfg),  # ids 0.. in this order: eos first
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, even unseen ones
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=length)
    return tok


def save_tokenizer(tok: Any, out_dir: str | Path, cfg: TokenizeConfig) -> Path:
    """HF format: ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json``."""
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    specials = {"bos_token": cfg.eos_token, "eos_token": cfg.eos_token, "unk_token": cfg.eos_token}
    if cfg.pad_token:
        specials["pad_token"] = cfg.pad_token
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        clean_up_tokenization_spaces=False,  # keep decode exact (no " ." → "." rewriting)
        additional_special_tokens=list(cfg.extra_special_tokens) or None,
        **specials,
    )
    hf.save_pretrained(str(tmp))
    _finish_hf_dir(tmp, specials, cfg.extra_special_tokens)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def _finish_hf_dir(directory: Path, specials: dict[str, str], extra: list[str]) -> None:
    """Make the directory load in transformers 4.x as well as 5.x (5.x writes neither of these)."""
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("model_max_length", None)  # the model, not the tokenizer, knows its context length
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    smap: dict[str, Any] = dict(specials)
    if extra:
        smap["additional_special_tokens"] = list(extra)
    (directory / "special_tokens_map.json").write_text(json.dumps(smap, indent=2, ensure_ascii=False) + "\n")


def reuse_tokenizer(src: str | Path, out_dir: str | Path, cfg: TokenizeConfig) -> Path:
    """Copy a local HF tokenizer dir into ``out_dir`` (fast tokenizers only; needs an EOS)."""
    from transformers import AutoTokenizer

    src = Path(src)
    if not (src / "tokenizer.json").exists():
        raise FileNotFoundError(f"tokenize.tokenizer_path={src}: no tokenizer.json there (need a fast HF tokenizer dir)")
    hf = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    if hf.eos_token is None:
        if hf.convert_tokens_to_ids(cfg.eos_token) in (None, hf.unk_token_id):
            raise ValueError(f"{src}: the tokenizer has no eos_token and {cfg.eos_token!r} is not in its vocabulary")
        hf.eos_token = cfg.eos_token
    missing = [t for t in cfg.extra_special_tokens if t not in hf.get_vocab()]
    if missing:  # e.g. PHF control tokens: reserved as single ids beside the reused vocabulary
        hf.add_tokens(missing, special_tokens=True)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(str(tmp))
    specials = {k: str(v) for k, v in hf.special_tokens_map.items() if isinstance(v, str)}
    if not (tmp / "special_tokens_map.json").exists():
        (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def _sample_texts(docs_dir: Path, plan: SplitPlan, keep: float, batch_docs: int) -> Iterator[str]:
    """Train-split texts, subsampled by a second id hash when the corpus is larger than the budget."""
    for batch in iter_batches(docs_dir, ["id", "text"], batch_size=batch_docs):
        for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(), strict=True):
            if plan.split_of(doc_id) == "train" and (keep >= 1.0 or id_hash(doc_id, _SAMPLE_SALT) < keep):
                yield text


def prepare_tokenizer(
    cfg: TokenizeConfig, docs_dir: str | Path, tokenizer_dir: str | Path, plan: SplitPlan, state_dir: str | Path
) -> tuple[Encoder, dict[str, Any]]:
    """Train (or reuse) the tokenizer unless ``tokenizer_dir`` already holds the one these inputs make."""
    docs_dir, tokenizer_dir, state_dir = Path(docs_dir), Path(tokenizer_dir), Path(state_dir)
    manifest = read_manifest(docs_dir)
    recipe = cfg.model_dump(include={"tokenizer_path", "vocab_size", "min_frequency", "train_max_mib",
                                     "eos_token", "pad_token", "extra_special_tokens"})
    if cfg.tokenizer_path:
        recipe["source_sha"] = sha256_file(Path(cfg.tokenizer_path) / "tokenizer.json")
    else:
        recipe.update(corpus=manifest["sha256"], split=plan.key())
    fp = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]
    marker = state_dir / "tokenizer.json"
    tok_json = tokenizer_dir / "tokenizer.json"
    info: dict[str, Any] = {"trained": False}
    done = json.loads(marker.read_text()) if marker.exists() else {}
    if not (tok_json.exists() and done.get("fingerprint") == fp and done.get("sha256") == sha256_file(tok_json)):
        if cfg.tokenizer_path:
            reuse_tokenizer(cfg.tokenizer_path, tokenizer_dir, cfg)
        else:
            keep = min(1.0, cfg.train_max_mib * 2**20 / max(1, manifest["text_bytes"]))
            n_train = sum(plan.docs.get("train", {}).values())
            tok = train_tokenizer(_sample_texts(docs_dir, plan, keep, cfg.batch_docs), cfg, length=n_train)
            save_tokenizer(tok, tokenizer_dir, cfg)
            info.update(trained=True, sample_fraction=round(keep, 6))
        state_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": fp, "sha256": sha256_file(tok_json)}))
    enc = Encoder.load(tokenizer_dir)
    info.update(vocab_size=enc.vocab_size, eos_id=enc.eos_id, dtype=enc.dtype.name)
    return enc, info

