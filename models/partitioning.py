"""A t5x partitioner whose mesh is `data x model` over the devices it is given.

t5x's `PjitPartitioner` derives its mesh from the platform: on TPU a physical submesh of
`num_partitions` chips per model-parallel group, on CPU `partitioning.get_cpu_mesh()`, which puts
every local device on the `model` axis whatever `num_partitions` says. `SliceMeshPartitioner`
builds the mesh the way a TPU slice's is laid out for any platform: `num_devices // num_partitions`
data-parallel groups of `num_partitions` devices each, arranged by
`jax.experimental.mesh_utils.create_device_mesh` (physical coordinates on TPU, device order
elsewhere). Everything else (logical axis rules, partitioned train step, checkpoint shardings) is
t5x's `PjitPartitioner`. It is what the simulated-device rehearsal (`make rehearse`) trains with:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m t5x.train \
      --gin_file=gin/runs/demo_cpu.gin --gin_file=gin/partitioning/slice_mesh.gin \
      --gin.SliceMeshPartitioner.num_partitions=4 ...
"""
import functools
from typing import Optional

import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh
from t5x import partitioning

MESH_AXES = ("data", "model")


def slice_mesh(num_partitions: int, num_devices: Optional[int] = None) -> Mesh:
    """A `data x model` mesh of the first `num_devices` devices (default: all of them)."""
    devices = jax.devices()
    num_devices = len(devices) if num_devices is None else num_devices
    if not 0 < num_devices <= len(devices):
        raise ValueError("num_devices must be in [1, %d] (the devices jax sees), got %d"
                         % (len(devices), num_devices))
    if num_partitions < 1 or num_devices % num_partitions:
        raise ValueError("num_partitions (%d) must divide the number of devices (%d)"
                         % (num_partitions, num_devices))
    shape = (num_devices // num_partitions, num_partitions)
    device_array = mesh_utils.create_device_mesh(shape, devices[:num_devices],
                                                 allow_split_physical_axes=True)
    return Mesh(device_array, MESH_AXES)


class SliceMeshPartitioner(partitioning.PjitPartitioner):
    """`PjitPartitioner` on `slice_mesh(num_partitions, num_devices)` (see the module docstring).

    Args:
      num_partitions: size of the `model` axis (the model-parallel group).
      num_devices: how many of jax's devices the mesh spans (default: all); fewer than all
        runs a smaller slice in the same process, e.g. one device for an unpartitioned run.
      **kwargs: `PjitPartitioner`'s other arguments (`logical_axis_rules`, ...).
    """

    def __init__(self, num_partitions: int = 1, num_devices: Optional[int] = None, **kwargs):
        super().__init__(num_partitions=num_partitions, **kwargs)
        self._num_devices = num_devices

    @functools.cached_property
    def mesh(self) -> Mesh:
        return slice_mesh(self._num_partitions, self._num_devices)
