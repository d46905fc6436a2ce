"""Concept proposers: the user's list, a shipped vocabulary, a vision-language model."""

from finexl.concepts.base import Candidate, Proposal, ProposalContext, Proposer

__all__ = ["Candidate", "Proposal", "ProposalContext", "Proposer"]
