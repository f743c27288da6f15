"""Failure prediction: phi-accrual suspicion, the failure-history hazard model, the predictor.

Modules: `predictor` (FailurePredictor, the contract), `model` (hazard model and stack), `history`
(features and the Weibull renewal with frailty), `boost` and `hazard` (the learned layers), `health`
(resource exhaustion, heartbeat jitter), `phi` (phi-accrual), `lanl` (the LANL log loader).
"""

from dspex_cluster.skills.failure.phi import PhiAccrualDetector, phi_from_stats
from dspex_cluster.skills.failure.predictor import FailurePredictor

__all__ = ["FailurePredictor", "PhiAccrualDetector", "phi_from_stats"]
