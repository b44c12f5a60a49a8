"""The record archive: every accepted batch, durable and answerable later.

"Measure first, ask questions later" is a promise about data: a daemon with
an ``[archive]`` stores each batch here *before* acknowledging it, and any
question -- an observable nobody configured, a new estimator, a time range,
one source -- can be asked of the archive afterwards, with or without qsense
(the format is plain Arrow/Parquet, ``docs/archive.md``).

* :class:`ArchiveWriter` (:mod:`.writer`) -- the one writer: append, fsync,
  rotate, seal, retain, recover after a crash;
* :class:`Archive` / :func:`open_archive` (:mod:`.reader`) -- read batches
  back, filtered by source, time, kind, wires or position;
* :mod:`.schema` -- the Arrow schema (one row per batch) and the row
  conversions; :mod:`.segments` -- the open (Arrow IPC stream) and sealed
  (Parquet) segment files; :mod:`.index` -- the (source, epoch, seq) runs;
  :mod:`.manifest` -- ``archive.json`` and the writer lock.
"""

from .index import RunIndex
from .reader import Archive, open_archive
from .schema import FORMAT, FORMAT_VERSION, SCHEMA, ArchiveError, Entry
from .segments import ArchiveFull
from .writer import ArchiveWriter

__all__ = ["Archive", "ArchiveWriter", "ArchiveError", "ArchiveFull", "Entry", "RunIndex", "open_archive", "SCHEMA", "FORMAT",
           "FORMAT_VERSION"]
