"""Data attribution (ssl-attribution): SSL features, attributors, counterfactual support, datamodels and LDS.

Importing this package registers every attributor in ``ATTRIBUTORS`` (``ssl-esvm``, ``ssl-knn``,
``pixel-knn``, ``random`` in ``attributors``; ``trak``; ``datamodels``), every SSL method in
``SSL_METHODS`` (``moco``, ``simclr``) and every feature source in ``FEATURES`` (``ssl``,
``classifier``, ``pixels``). The DAG's units: ``pretrain.pretrain_ssl`` (one SSL backbone),
``features.extract_features``, an attributor through ``attribute``, ``support.support_unit`` (one
method × kind × target), ``subsets.subset_margins`` (one shard of subset models), ``subsets.lds``.
lightly, traker and scikit-learn are imported where used, not here.
"""

from __future__ import annotations

# Imported for their @ATTRIBUTORS.register side effects.
from poisonlab.attribution import datamodels, trak  # noqa: F401
from poisonlab.attribution.attributors import ATTRIBUTORS, Attribution, AttributionInputs
from poisonlab.attribution.features import FEATURES, extract_features
from poisonlab.attribution.ssl import SSL_METHODS, SSLConfig
from poisonlab.attribution.support import KINDS

__all__ = ["ATTRIBUTORS", "FEATURES", "KINDS", "SSL_METHODS", "Attribution", "AttributionInputs", "SSLConfig",
           "attribute", "extract_features"]


def attribute(method: str, inputs: AttributionInputs, **options) -> Attribution:
    """Run attributor ``method`` with its ``options``; unknown names or options raise ConfigError."""
    return ATTRIBUTORS.build(method, inputs, **options)
