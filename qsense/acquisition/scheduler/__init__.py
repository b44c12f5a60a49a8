"""The measurement scheduler: copy by copy, single-copy shadow or two-copy Bell.

Two pieces, each with one job:

* a **policy** turns what is known (targets and their running estimates, the
  copy arrival rate λ, the memory's capacity and T2, the piston phase
  diffusion D between the two copies of a pair) into a :class:`Plan`: the
  fraction ``pair_fraction`` of arriving copies committed to Bell pairs and the
  longest time ``cap`` a stored copy may wait for its partner.  Policies:
  ``shadow`` (f = 0), ``bell`` (f = 1), ``fixed`` (a given f) and ``adaptive``
  (:func:`plan_adaptive`, derived in docs/scheduler.md);
* the :class:`Scheduler` executes the plan on every arrival.  A copy whose
  pairing key has a partner waiting in memory *closes* the pair (Bell); otherwise
  a deficit counter decides whether it *opens* a pair (stored in memory) or is
  measured at once as a shadow.  Because the partner is always the very next
  arrival with that key, the first copy's wait is τ ~ Exp(λ), the shortest
  possible, whatever f is.  Openers older than ``cap`` are evicted (or, with
  ``salvage=True``, measured as shadows).

The scheduler never measures anything itself: it returns *items*, tuples of
:class:`~qsense.acquisition.memory.StoredCopy` of length 1 (shadow) or 2 (Bell, first copy
first), which the pipeline batches into measurement plans for a backend.

Every decision is counted (``counters``) and every re-plan is logged with its
reasoning (INFO when the plan changes, DEBUG otherwise).

Modules:

* :mod:`.plans` — :class:`PlanContext` (what a policy may look at),
  :class:`Plan` (what it decides) and :class:`TargetCost` (a plan's per-target
  reasoning);
* :mod:`.policies` — the :class:`Policy` protocol, the ``shadow``, ``bell`` and
  ``fixed`` policies, :data:`POLICIES` and :func:`make_policy`;
* :mod:`.adaptive` — the adaptive rule :func:`plan_adaptive` (with its reused
  scratch arrays and cap grid) and :class:`AdaptivePolicy`;
* :mod:`.core` — the :class:`Scheduler` (``on_arrival``, ``on_block``,
  expiries, ``drain``) and what it returns: ``Item`` and :class:`BlockResult`.
* :mod:`.derandomized` — basis policies for single-copy measurements:
  :class:`DerandomizedBasisPolicy` (online derandomization towards the
  targets' precision) and :class:`UniformBasisPolicy`.
"""

# Item is re-exported for qsense.acquisition.pipeline but, as before the split, left out of __all__
from .adaptive import AdaptivePolicy, plan_adaptive
from .core import BlockResult, Item, Scheduler  # noqa: F401
from .derandomized import DerandomizedBasisPolicy, UniformBasisPolicy
from .plans import Plan, PlanContext, TargetCost
from .policies import POLICIES, BellPolicy, FixedPolicy, Policy, ShadowPolicy, make_policy

__all__ = [
    "Plan",
    "TargetCost",
    "PlanContext",
    "Policy",
    "ShadowPolicy",
    "BellPolicy",
    "FixedPolicy",
    "AdaptivePolicy",
    "make_policy",
    "plan_adaptive",
    "Scheduler",
    "BlockResult",
    "POLICIES",
    "DerandomizedBasisPolicy",
    "UniformBasisPolicy",
]
