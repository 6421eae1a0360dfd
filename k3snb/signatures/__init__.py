"""Blocker signatures and the log classifier.

``k3snb.classify(log)`` matches each line against the catalogue in ``k3snb/data/signatures.yaml``
(failure signatures S/A/G ids from the research, progress markers P ids) and reports the matches
and the furthest lifecycle stage reached; ``k3snb.signatures()`` lists the catalogue.
"""

from ._classify import Catalog, Classification, Signature, SignatureTable, classify, load_catalog, signatures

__all__ = ["classify", "signatures", "Classification", "Signature", "SignatureTable", "Catalog", "load_catalog"]
