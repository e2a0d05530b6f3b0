"""Exceptions jobstream raises to its callers. Messages never carry secrets."""

from __future__ import annotations


class JobstreamError(Exception):
    """Base of jobstream's errors."""


class EnqueueError(JobstreamError, ValueError):
    """A job was refused at the door (bad kind, payload or options)."""


class PayloadTooLarge(EnqueueError):
    """The encoded payload is over the configured cap."""


class PayloadDecodeError(JobstreamError):
    """A worker could not decode a job's payload into its handler's type."""


class UnknownKind(JobstreamError):
    """A worker got a job of a kind its registry does not know."""
