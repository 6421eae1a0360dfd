"""Blocker signatures and the log classifier.

``k3snb.classify(log)`` matches each line against the catalogue in ``k3snb/data/signatures.yaml``
(failure signatures S/A/G ids from the research, progress markers P ids) and reports the matches
and the furthest lifecycle stage reached; ``k3snb.signatures()`` lists the catalogue.
"""

import sys
import types

from ._classify import Catalog, Classification, Signature, SignatureTable, classify, load_catalog, signatures

__all__ = ["classify", "signatures", "Classification", "Signature", "SignatureTable", "Catalog", "load_catalog"]


class _CallableModule(types.ModuleType):
    # importing this package sets the attribute ``k3snb.signatures`` to the *module*, shadowing the
    # flat-API function of the same name; calling the module keeps ``k3snb.signatures()`` working
    def __call__(self) -> SignatureTable:
        return signatures()


sys.modules[__name__].__class__ = _CallableModule
