"""Mesh, logical-axis rules and shardings (maxtext / lm1b style, no pmap).

Mesh axes ("data", "fsdp"), both AxisType.Auto (jax.make_mesh defaults to Explicit, which
would make every op sharding-typed; environment.md §3). Activations: the batch axis is
split over ("data", "fsdp"). Parameters: FSDP shards one axis of each large parameter over
"fsdp" and replicates it over "data". Both go through one table of flax logical axis
rules, LOGICAL_RULES, over the logical names that every parameter (layers/common.py) and
the constrained activations carry. flax gives a mesh axis to the first rule, in table
order, whose logical name the array has, so the order is the priority (the widest dims
first), and the batch rule, first of all, keeps "fsdp" off the activations' other axes.
Before the rules apply to a parameter, an axis whose size does not divide by the fsdp size
is dropped (uneven shards are not allowed), and a parameter smaller than `fsdp_min_size`
elements stays replicated (not worth a gather).

Activations: the train step runs under `activation_rules(mesh)`, where the layers'
`nn.with_logical_constraint` calls (the transformer residual stream) become sharding
constraints; outside it they are no-ops.
"""

from __future__ import annotations

import contextlib
import functools
import re

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from secoustic_jax.config.model import MelConfig
from secoustic_jax.config.train import MeshConfig
from secoustic_jax.data import device_mel
from secoustic_jax.tree import flatten

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)
# flax logical axis rules, highest priority first. Parameters: the names that may carry
# the fsdp axis (the widest dims first). Activations: batch over (data, fsdp), which then
# leaves no mesh axis for their length or channel names.
LOGICAL_RULES = (("batch", BATCH_AXES), ("length", None), ("mlp", FSDP), ("qkv", FSDP),
                 ("embed", FSDP), ("heads", FSDP), ("conv_out", FSDP), ("conv_in", FSDP),
                 ("vocab", FSDP), ("gates", FSDP), ("hidden", FSDP))


def make_mesh(cfg: MeshConfig, devices=None) -> jax.sharding.Mesh:
    """(data, fsdp) mesh over all (global) devices; data = -1 fills the rest."""
    devices = jax.devices() if devices is None else devices
    n = len(devices)
    data = n // cfg.fsdp if cfg.data == -1 else cfg.data
    if data * cfg.fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={cfg.fsdp} does not use the {n} devices")
    arr = np.asarray(devices).reshape(data, cfg.fsdp)
    return jax.sharding.Mesh(arr, BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def param_spec(shape, logical, fsdp_size: int, min_size: int) -> P:
    """PartitionSpec of one parameter from its logical axis names (see module docstring)."""
    if fsdp_size <= 1 or logical is None or int(np.prod(shape)) < min_size:
        return P()
    names, seen = [], set()
    for dim, name in zip(shape, logical):
        # Indivisible dims cannot be sharded; a repeated name (flax refuses them) could
        # only take the axis once, at its first dim.
        keep = name is not None and dim % fsdp_size == 0 and name not in seen
        names.append(name if keep else None)
        seen.add(name)
    spec = nn.logical_to_mesh_axes(tuple(names), LOGICAL_RULES)
    return spec if any(a is not None for a in spec) else P()  # replicated: P(), as before


@contextlib.contextmanager
def activation_rules(mesh):
    """Trace-time context of a train step: the mesh and LOGICAL_RULES, so the layers'
    `nn.with_logical_constraint` annotations become sharding constraints."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(LOGICAL_RULES):
        yield


def param_specs(boxed_abstract, cfg: MeshConfig, fsdp_size: int):
    """Boxed eval_shape tree (with LogicallyPartitioned leaves) -> unboxed tree of P."""
    logical = nn.get_partition_spec(boxed_abstract)
    shapes = nn.meta.unbox(boxed_abstract)
    return jax.tree.map(lambda s, lg: param_spec(s.shape, lg, fsdp_size, cfg.fsdp_min_size),
                        shapes, logical, is_leaf=lambda x: isinstance(x, P))


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def tree_specs_like(tree, flat_specs: dict):
    """Specs for any tree whose leaves end in a parameter path (optimiser moments): a leaf
    whose trailing dict keys name a parameter with the same shape takes its spec."""
    def spec(path, leaf):
        keys = []
        for k in reversed(path):
            if not isinstance(k, jax.tree_util.DictKey):
                break
            keys.insert(0, str(k.key))
        cand = flat_specs.get("/".join(keys))
        if cand is not None and cand[0] == tuple(np.shape(leaf)):
            return cand[1]
        return P()

    return jax.tree_util.tree_map_with_path(spec, tree)


def flat_param_specs(abstract_params, specs) -> dict:
    """{"codec/encoder/...": (shape, spec)} for `tree_specs_like`."""
    fs, fp = flatten(specs, "/"), flatten(abstract_params, "/")
    return {k: (tuple(fp[k].shape), fs[k]) for k in fp}


def to_shardings(mesh, specs):
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) axis over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(mesh, local_batch: dict, mel: MelConfig | None = None) -> dict:
    """Host-local numpy batch -> global jax.Arrays sharded over the batch axes.

    Each process passes its own slice (global batch / process_count rows); with one process
    this is a sharded device_put. A waveform batch (pipeline.features="waveform") gets its
    log-mel computed here, on the devices, with the model's front end `mel`.
    """
    sh = batch_sharding(mesh)
    out = {k: jax.make_array_from_process_local_data(sh, np.asarray(v))
           for k, v in local_batch.items()}
    if "wav" in out:
        if mel is None:
            raise ValueError("global_batch: a waveform batch needs the model's mel config")
        out = device_mel.compiled(mel, sh)(out)
    return out


def describe(specs) -> dict[str, str]:
    """'path' -> 'P(...)' for docs and tests."""
    flat = flatten(specs, "/")
    return {k: re.sub(r"PartitionSpec", "P", str(v)) for k, v in flat.items()}
