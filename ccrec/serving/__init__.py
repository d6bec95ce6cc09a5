"""ccrec.serving: on-device bundle and its numpy-only runtime (imports no jax).

bundle     the bundle format: manifest + .npy arrays, validation (numpy)
manifest   the manifest's model fields: config schema, the checksum sealing them
runtime    Recommender: load a bundle, encode sessions, recommend (numpy)
scoring    code-table scoring, table and tensor-train scoring, exact top-k (numpy)
nn         the session encoders (transformer, GRU) and readouts in numpy
evaluate   HR/MRR/NDCG of a loaded bundle (numpy)
export     a ModelSpec and its Flax variables -> bundle, verified against the JAX model
           (imports jax; not imported here)
"""

from ccrec.serving.bundle import FORMAT_VERSION, BundleError, read_bundle, write_bundle
from ccrec.serving.runtime import (
    EmptySessionError,
    InvalidSessionError,
    Recommendation,
    Recommender,
    UnknownItemError,
)

__all__ = [
    "FORMAT_VERSION",
    "BundleError",
    "EmptySessionError",
    "InvalidSessionError",
    "Recommendation",
    "Recommender",
    "UnknownItemError",
    "read_bundle",
    "write_bundle",
]
