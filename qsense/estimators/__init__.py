"""Estimators: online, mergeable statistics over record batches.

Layer 2 of 4 (data model < **estimators** < acquisition | streaming < apps).
Turns :class:`~qsense.records.ShadowBatch` / :class:`~qsense.records.BellBatch`
records into estimates with error bars: classical shadows (median of means),
two-copy Bell squares and purities, U-statistic and matched-term purities up to
16-qubit subsystems (:mod:`.purity`, :mod:`.class_kernels`), reduced states and
their entropies (:mod:`.reconstruct`), noise-robust shadows (:mod:`.robust`), interferometric
visibilities, the derandomized measurement design (:mod:`.derandomize`), the memory decoherence models (:mod:`.decoherence`) that Bell
reweighting, the memory and the scheduler share, and the bit-packed counting kernels (NumPy and a compiled pass)
they share.  Every estimator is mergeable (``merge``) and serialisable
(``to_bytes`` / ``from_bytes``) and holds only its sufficient statistics.

May import: the data model (:mod:`qsense.records`, :mod:`qsense.pauli`) and
numpy/scipy/numba.  Never: acquisition, streaming, apps, sims, drivers
(checked by import-linter, ``[tool.importlinter]`` in ``pyproject.toml``).
"""
