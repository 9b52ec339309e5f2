"""Whether an adapter fits a server: one rule for the operator (before a version is routed) and the adapter
agent (before an artifact is loaded), so both refuse the same adapters with the same words."""

from __future__ import annotations

HUB_SCHEMES = ("hf://", "modelscope://")


def same_base_model(trained: str, served: str) -> bool:
    """Whether an adapter trained on `trained` fits the base model `served` (two base model URIs).

    Equal URIs (a trailing `/` aside) match. Hub URIs (hf://, modelscope://) match when they name the
    same repository and, if both pin a revision, the same one: an unpinned side cannot be told apart.
    """
    if trained.rstrip("/") == served.rstrip("/"):
        return True
    if not (trained.startswith(HUB_SCHEMES) and served.startswith(HUB_SCHEMES)):
        return False
    (repo_a, _, rev_a), (repo_b, _, rev_b) = trained.partition("@"), served.partition("@")
    return repo_a == repo_b and (not rev_a or not rev_b or rev_a == rev_b)
