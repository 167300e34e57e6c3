"""Training with Lightning: a causal LM over the mixture sampler, resumable exactly, exported as an HF model.

Modules, in the order a run uses them
- :mod:`.data`: :class:`~.data.TokenDataModule` (LightningDataModule) with training batches from the mixture
  sampler; its checkpointed state is the sampler position *after the last batch actually trained on* (not after
  the loader's prefetch), so a resumed run draws exactly the batches the interrupted one would have.
- :mod:`.module`: :class:`~.module.CausalLMModule` (LightningModule): next-token loss, AdamW with decoupled
  weight decay on matrices only, a closed-form LR schedule (:mod:`lmpipe.schedules`) stepped per optimizer step;
  RNG states in the checkpoint.
- :mod:`.callbacks`: :class:`~.callbacks.Throughput` (tokens/s and MFU: model FLOPs over the device's peak) and
  :class:`~.callbacks.StepHooks` (validation and the rolling checkpoint, placed by optimizer step).
- :mod:`.resume`: which checkpoint belongs to this run, and the DVCLive logger rewound to it.
- :mod:`.trainer`: :func:`~.trainer.train` builds the ``Trainer`` from :class:`TrainConfig` (CPU by default;
  GPUs, nodes, DDP/FSDP, bf16-mixed, accumulation, clipping, ``torch.compile`` by params), resumes from
  ``<ckpt_dir>/latest.ckpt`` when that checkpoint belongs to the same run, logs through DVCLive, and exports the
  model with the tokenizer.

Data parallelism without a sharded sampler: every rank runs the same sampler and keeps its slice of each global
batch, so the sampler state is identical on all ranks and the one saved by rank 0 resumes all of them.
"""
