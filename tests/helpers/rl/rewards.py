"""A verifier with signal on random-init models: the parity of the completion's character codes.

Random-init test models almost never produce a correct tiny-world answer, so every group would
have reward 0 and no gradient; this reward is ~50/50 per sample, so updates really happen.
"""


def char_parity(completion: str, answer: str) -> float:  # noqa: ARG001 - verifier contract
    return float(sum(map(ord, completion)) % 2)
