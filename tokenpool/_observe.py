"""Logs and metrics for the rare paths (refreshes, failures, invalidations, waiting).

The hit path never comes here: cells count hits and misses in plain integers
and :class:`~tokenpool._metrics.PoolMetrics` folds them into Prometheus
counters periodically and at shutdown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import CredentialsRejected, InvalidTokenResponse, TokenRequestError
from .logging import library_logger

if TYPE_CHECKING:
    from ._cell_state import CellState
    from ._metrics import PoolMetrics
    from ._token import Token

__all__ = ["Observer", "failure_reason"]


def failure_reason(error: TokenRequestError) -> str:
    """A small, fixed vocabulary for the ``reason`` label: the error's own, never its text."""
    return error.reason


def outcome_of(error: TokenRequestError) -> str:
    """The ``outcome`` label of the refresh-duration histogram."""
    if isinstance(error, CredentialsRejected):
        return "credentials_rejected"
    if isinstance(error, InvalidTokenResponse):
        return "invalid_response"
    return "retryable_failure"


class Observer:
    """Turns cell events into structlog events and Prometheus samples."""

    def __init__(self, logger: Any, metrics: PoolMetrics | None) -> None:
        self.log = logger if logger is not None else library_logger()
        self.metrics = metrics

    def refresh_started(self, cell: CellState, attempt: int) -> None:
        self.log.debug("token.refresh.start", provider=cell.name, attempt=attempt)
        if self.metrics is not None:
            self.metrics.attempt(cell.group)

    def refresh_succeeded(self, cell: CellState, token: Token, duration: float) -> None:
        self.log.info(
            "token.refresh.success",
            provider=cell.name,
            duration=round(duration, 6),
            expires_in=token.expires_in,
            refresh_in=round(token.refresh_at - token.sent_at, 3),
            remaining=round(token.expires_at - cell.clock.now(), 3),
        )
        if self.metrics is not None:
            self.metrics.refreshed(cell.group, cell.name, duration)

    def refresh_failed(
        self, cell: CellState, error: TokenRequestError, duration: float, delay: float
    ) -> None:
        token = cell.token
        remaining = None if token is None else round(token.usable_until - cell.clock.now(), 3)
        fields: dict[str, Any] = {
            "provider": cell.name,
            "attempt": cell.failures,
            "duration": round(duration, 6),
            "status": error.status_code,
            "error_code": error.error_code,
            "reason": failure_reason(error),
            "error": str(error),
            "retry_in": round(delay, 3),
            "remaining": remaining,
        }
        if isinstance(error, CredentialsRejected):
            self.log.error("token.refresh.credentials_rejected", **fields)
        elif remaining is not None and remaining > delay:
            # The current token outlives the backoff: nothing is lost yet.
            self.log.warning("token.refresh.retry", **fields)
        else:
            self.log.error("token.refresh.failed", **fields)
        if self.metrics is not None:
            self.metrics.failed(
                cell.group, cell.name, duration, error.reason, outcome_of(error), cell.failures, delay
            )

    def refresh_deferred(self, cell: CellState, retry_in: float, reason: str) -> None:
        # Routine while a fleet store is briefly unavailable; the store logs the fault itself.
        self.log.debug(
            "token.refresh.deferred", provider=cell.name, reason=reason, retry_in=round(retry_in, 3)
        )

    def invalidated(self, cell: CellState, token: Token) -> None:
        self.log.info(
            "token.invalidated",
            provider=cell.name,
            remaining=round(token.expires_at - cell.clock.now(), 3),
        )

    def unauthorized_ignored(self, cell: CellState, token: Token) -> None:
        self.log.warning(
            "token.unauthorized_cooldown",
            provider=cell.name,
            age=round(cell.clock.now() - token.sent_at, 3),
            cooldown=round(cell.provider.refresh.cooldown(token.expires_in), 3),
        )

    def waiting(self, cell: CellState, delta: int) -> None:
        if self.metrics is not None:
            self.metrics.waiting(cell.group, delta)

    def downstream_unauthorized(self, cell: CellState, *, retried: bool) -> None:
        self.log.warning("token.downstream_unauthorized", provider=cell.name, retried=retried)
        if self.metrics is not None:
            self.metrics.downstream_unauthorized(cell.group, retried=retried)
