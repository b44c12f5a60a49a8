"""Acquisition: from copies to records.

Layer 3 of 4 (data model < estimators < **acquisition** | streaming < apps).
Quantum memories hold copies (:mod:`.memory`), the scheduler decides copy by
copy, or block by block, between a single-copy shadow and a two-copy Bell
measurement (:mod:`.scheduler`, with the precision targets of :mod:`.targets`),
measurement backends turn plans into records (:mod:`.backends`), and the async
pipeline runs driver → memory → scheduler → backend → sinks with bounded
queues (:mod:`.pipeline`, :mod:`.blocks`).

May import: estimators and the data model.  Never: streaming (the two layers
are independent; the app layer joins them), apps, sims, drivers.  Memories and
backends provided elsewhere are found by name through entry points
(:mod:`qsense.plugins`).
"""
