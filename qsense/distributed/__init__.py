"""Scale-out: a record archive reduced on a Dask cluster into mergeable estimators.

:func:`estimate` cuts the archive into partitions (runs of Parquet row groups
of one segment, in position order), runs one task per partition that reads
its files on a worker and folds them into fresh estimators, and merges the
partial states by a fixed balanced tree (see :mod:`qsense.distributed.estimate`
for the median-of-means rule).  Dask is imported lazily: ``import qsense``
never needs it.
"""

from .estimate import WORKER_CONFIG, DistributedError, DistributedResult, connect, estimate, local_cluster
from .partitions import DEFAULT_PARTITION_BYTES, Partition, plan
from .tasks import warm_worker

__all__ = [
           "DEFAULT_PARTITION_BYTES",
           "WORKER_CONFIG",
           "DistributedError",
           "DistributedResult",
           "Partition",
           "connect",
           "estimate",
           "local_cluster",
           "plan",
           "warm_worker",
]
