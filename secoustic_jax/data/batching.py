"""Batching on top of a grain iterator: skip accounting, resumable state, global arrays.

The grain iterator yields one example (or a skip marker) at a time. `BatchIterator`
pulls exactly as many as it needs for one local batch, so between batches it holds no
buffered examples: its state is the grain iterator state plus counters, and restoring
it replays exactly the batches the original run would have produced.
"""

from __future__ import annotations

import copy
import json

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from secoustic_jax.data import report as R

SKIP = "_skip"


def batch_sharding(mesh, batch_axes: tuple[str, ...]):
    """NamedSharding splitting the leading (batch) dim over the mesh axes in `batch_axes`."""
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    if not axes:
        raise ValueError(f"none of the batch axes {batch_axes} is an axis of the mesh "
                         f"{mesh.axis_names}; pass sharding= or set PipelineConfig.batch_axes")
    return NamedSharding(mesh, PartitionSpec(axes if len(axes) > 1 else axes[0]))


class BatchIterator:
    """Iterator of dict batches with `get_state()` (bytes) / `set_state()` and `stats()`.

    Args:
      make_grain_iter: zero-arg callable returning a fresh grain DatasetIterator.
      local_batch: examples per batch on this process.
      sharding: None (numpy batches) or a jax Sharding for global jax.Arrays.
      global_batch: global batch size (= local_batch * process_count).
      manifest_report: skips found when reading the manifests (reported, not re-counted).
      pad_final: eval mode: a short final batch is filled with `valid` = 0 examples.
      template: an example dict used for padding (shapes and dtypes).
    """

    def __init__(self, make_grain_iter, local_batch: int, *, sharding=None, global_batch=None,
                 manifest_report: R.SkipReport | None = None, pad_final: bool = False,
                 template: dict | None = None, speakers: list[str] | None = None,
                 num_examples: int | None = None, inventory=None):
        self._make = make_grain_iter
        self._it = make_grain_iter()
        self.local_batch = local_batch
        self.global_batch = global_batch or local_batch
        self.sharding = sharding
        self.manifest_report = manifest_report or R.SkipReport("manifest")
        self.load_report = R.SkipReport("load")
        self.pad_final = pad_final
        self.template = template
        self.speakers = list(speakers or [])
        self.num_examples = num_examples  # this process's shard size (one epoch)
        self.inventory = inventory  # PhoneInventory (its size fixes the phoneme embedding)
        self.inventory_labels = tuple(inventory.labels) if inventory is not None else ()
        self.batches = 0
        self._done = False

    def __iter__(self):
        return self

    def _pull(self) -> list[dict]:
        got: list[dict] = []
        while len(got) < self.local_batch:
            try:
                ex = next(self._it)
            except StopIteration:
                break
            if SKIP in ex:
                item, kind, why = ex[SKIP]
                if kind != "padding":
                    self.load_report.skip(item, kind, why)
                if self.pad_final:  # eval: keep the batch count equal on every host
                    got.append(self._pad_example())
                continue
            self.load_report.keep(float(ex["mel_mask"].sum()) * 256 / 22050)
            got.append(ex)
        return got

    def _pad_example(self) -> dict:
        if self.template is None:
            raise RuntimeError("eval padding needs a template example")
        # all zeros (mask 0, valid 0, phones = padding) except utt_index = -1
        return {k: np.full_like(v, -1) if k in ("utt_index", "prompt_utt_index") else np.zeros_like(v)
                for k, v in self.template.items()}

    def __next__(self) -> dict:
        if self._done:
            raise StopIteration
        got = self._pull()
        if not got or (len(got) < self.local_batch and not self.pad_final):
            self._done = True  # drop the remainder in training: shapes stay static
            raise StopIteration
        while len(got) < self.local_batch:
            got.append(self._pad_example())
        batch = {k: np.stack([ex[k] for ex in got]) for k in got[0]}
        self.batches += 1
        return self._globalize(batch)

    def _globalize(self, batch: dict) -> dict:
        if self.sharding is None:
            return batch
        return {k: jax.make_array_from_process_local_data(
            self.sharding, v, (self.global_batch,) + v.shape[1:]) for k, v in batch.items()}

    def get_state_dict(self) -> dict:
        """JSON-able state: grain iterator state + counters (take it between batches)."""
        return {"grain": copy.deepcopy(self._it.get_state()), "batches": self.batches,
                "done": self._done, "load_counts": dict(self.load_report.counts),
                "load_kept": self.load_report.kept}

    def get_state(self) -> bytes:
        """The state as UTF-8 JSON bytes (what checkpoints store; grain's convention)."""
        return json.dumps(self.get_state_dict(), sort_keys=True).encode()

    def set_state(self, state) -> None:
        """Restores a state from `get_state` (bytes/str) or `get_state_dict` (dict)."""
        if isinstance(state, (bytes, bytearray, memoryview, str)):
            state = json.loads(bytes(state).decode() if not isinstance(state, str) else state)
        self._it = self._make()
        self._it.set_state(copy.deepcopy(state["grain"]))
        self.batches = int(state["batches"])
        self._done = bool(state.get("done", False))
        self.load_report = R.SkipReport("load")
        self.load_report.counts.update(state.get("load_counts", {}))
        self.load_report.kept = int(state.get("load_kept", 0))

    def stats(self) -> dict:
        """Counts for training logs: kept / skipped by kind, manifest- and load-time."""
        return {"batches": self.batches, "manifest": self.manifest_report.to_dict(),
                "load": self.load_report.to_dict(),
                "skipped_total": self.manifest_report.skipped + self.load_report.skipped}

    def report(self) -> str:
        return self.manifest_report.summary() + "\n" + self.load_report.summary()

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
