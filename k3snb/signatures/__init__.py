"""Blocker signatures and the log classifier.

``k3snb.classify(log)`` matches each line against the catalogue in ``k3snb/data/signatures.yaml``
(failure signatures S/A/G ids from the research, progress markers P ids) and reports the matches
and the furthest lifecycle stage reached; ``k3snb.list_signatures()`` lists the catalogue.
"""


from ._classify import (
    Catalog,
    Classification,
    Signature,
    SignatureTable,
    classify,
    list_signatures,
    load_catalog,
)

__all__ = ["classify", "list_signatures", "Classification", "Signature", "SignatureTable", "Catalog", "load_catalog"]

