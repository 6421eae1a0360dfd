"""Verdicts on the research's claims: one pure function per check, recorded evidence in, ``Verdict`` out.

* :class:`Claim`, :func:`get_claim`, :func:`list_claims`: the claim sentences (k3snb/data/claims.yaml),
  keyed by the ids the experiment registry lists.
* :func:`conclude`: a notebook's last call — checks that the verdicts cover exactly the registry's claims
  for the experiment, records them (``k3snb.verdict``) and returns one :class:`VerdictTable`.
* ``environment`` (00), ``interception`` (04, 06, 09, 24), ``k3s`` (01–16), ``sandbox_deaths`` (91), ``pods``
  (19, 20, 23, 32), ``runtime`` (21, 25–29, 31), ``shims`` (30), ``cgroupfs`` (07, 10, 11, 17): verdicts;
  ``runs``: what the interception notebooks run (measurements composed from runners and tracing);
  ``runc``: runc's reach under the tracer (which process read what).
"""

from __future__ import annotations

from . import environment, interception, k3s, pods, runs, runtime, sandbox_deaths, shims
from ._core import Claim, VerdictTable, conclude, get_claim, judged, list_claims, not_testable

__all__ = ["Claim", "VerdictTable", "conclude", "environment", "get_claim", "interception", "judged", "k3s",
           "list_claims", "not_testable", "pods", "runs", "runtime", "sandbox_deaths", "shims"]
