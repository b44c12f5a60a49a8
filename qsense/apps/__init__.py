"""Apps: the ``qsense`` command line and the compositions it runs.

Layer 4 of 4, the top (data model < estimators < acquisition | streaming <
**apps**).  :mod:`.cli` wires the sub-commands; each sub-command is a module
with ``add_arguments(parser)`` and ``run(args) -> int``: :mod:`.demo`,
:mod:`.daemon`, :mod:`.estimate`, :mod:`.record`, :mod:`.replay`, :mod:`.watch`.  :mod:`.chain` is the reusable composition
driver → memory → scheduler → backend → publisher → daemon
(:class:`~qsense.apps.chain.Chain`) that the demo runs and that scripts can
use instead of wiring the pieces by hand.

May import every layer below, and :mod:`qsense.sims` and :mod:`qsense.drivers`
directly (the demo composes a simulated telescope array); nothing imports apps.
"""
