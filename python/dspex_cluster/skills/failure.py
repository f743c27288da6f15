"""Failure prediction skill: phi-accrual heartbeat suspicion and a failure-history hazard model."""

from __future__ import annotations

from dspex_cluster.skills.failure_phi import PhiAccrualDetector, phi_from_stats

__all__ = ["PhiAccrualDetector", "phi_from_stats"]
