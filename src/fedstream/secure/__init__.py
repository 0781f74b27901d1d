"""Secure-sum backends: the plain running sum, SecAgg+ masking, and homomorphic encryption
(CKKS, Paillier). All reveal only Σ weight·payload, so every sum-based strategy works
with every one of them."""

from fedstream.secure.he import CKKS_PRESETS, CKKSConfig, PaillierConfig
from fedstream.secure.plain import PlainSum
from fedstream.secure.secagg import SecAggConfig, SecAggError
from fedstream.secure.session import SecureDevice, SecureSumResult, he_sum, secure_sum

__all__ = [
    "CKKS_PRESETS",
    "CKKSConfig",
    "PaillierConfig",
    "PlainSum",
    "SecAggConfig",
    "SecAggError",
    "SecureDevice",
    "SecureSumResult",
    "he_sum",
    "secure_sum",
]
