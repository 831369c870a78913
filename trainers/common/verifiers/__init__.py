"""Reward verifiers (seeds spec 1.6): math answers via math_verify, code by running its tests in the sandbox.

Each returns a `Verdict` (binary reward + verdict + extracted answer + detail) and never raises. Score batches
through `trainers.common.rewards.RewardPool`, never in the trainer process."""

from trainers.common.verifiers.code import extract_code, verify_code
from trainers.common.verifiers.math import extract_answer, verify_math
from trainers.common.verifiers.verdict import VERDICTS, Verdict

__all__ = ["VERDICTS", "Verdict", "extract_answer", "extract_code", "verify_code", "verify_math"]
