"""Who is signed in, and who may try again: server-side sessions and the sign-in throttle, as
pure state (every method that needs the time takes ``now``).

:class:`Sessions`: the cookie carries only a random session id (signed, ``SameSite=Strict``);
the reviewer it stands for is kept here. Signing out closes the session, so the cookie is
worth nothing afterwards, even replayed; a session also ends after ``max_age_s``. Nothing is
kept on disk: a restart of the service ends every session (everyone signs in again), which is
the revocation that survives a restart.

:class:`Throttle`: failed sign-ins slow down whoever fails, not the reviewer whose name they
try. Failures count by (client address, name): after ``free`` of them the next attempt from
that address for that name waits 1 s, then 2 s, 4 s... up to ``max_wait_s``; an address that
fails across many names is slowed by its address alone too (``free_per_address``). The right
password from another address is never held back, and a success clears its own count.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

#: A session's life (the cookie's too).
MAX_AGE_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in reviewer until ``expires`` (epoch seconds)."""

    reviewer: str
    expires: float


class Sessions:
    """The open sessions by id (see the module docstring)."""

    def __init__(self, max_age_s: float = MAX_AGE_S, limit: int = 100_000) -> None:
        self.max_age_s = max_age_s
        self.limit = limit
        self._open: dict[str, Session] = {}

    def open(self, reviewer: str, now: float) -> str:
        """A new session for ``reviewer``; its id (what the cookie carries)."""
        if len(self._open) >= self.limit:
            self.prune(now)
        sid = secrets.token_urlsafe(32)
        self._open[sid] = Session(reviewer, now + self.max_age_s)
        return sid

    def reviewer(self, sid: str | None, now: float) -> str | None:
        """Who session ``sid`` is, while it is open."""
        session = self._open.get(sid or "")
        if session is None:
            return None
        if session.expires <= now:
            del self._open[sid]
            return None
        return session.reviewer

    def close(self, sid: str | None) -> None:
        """End a session (signing out)."""
        self._open.pop(sid or "", None)

    def prune(self, now: float) -> None:
        """Forget the expired sessions."""
        for sid in [s for s, session in self._open.items() if session.expires <= now]:
            del self._open[sid]

    def __len__(self) -> int:
        return len(self._open)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0


@dataclass
class Throttle:
    """Growing waits after failed sign-ins (see the module docstring)."""

    free: int = 3
    free_per_address: int = 20
    max_wait_s: float = 300.0
    #: counts older than this (since their last failure) are forgotten
    memory_s: float = 3600.0
    limit: int = 100_000
    _by_name: dict[tuple[str, str], _Failures] = field(default_factory=dict)
    _by_address: dict[str, _Failures] = field(default_factory=dict)

    def _delay(self, failures: _Failures | None, free: int, now: float) -> float:
        if failures is None or failures.count < free:
            return 0.0
        delay = min(2.0 ** (failures.count - free), self.max_wait_s)
        return max(0.0, failures.last + delay - now)

    def wait(self, address: str, name: str, now: float) -> float:
        """Seconds ``address`` must still wait before it may try ``name`` (0: go ahead)."""
        return max(self._delay(self._by_name.get((address, name)), self.free, now),
                   self._delay(self._by_address.get(address), self.free_per_address, now))

    def failed(self, address: str, name: str, now: float) -> None:
        """Count a failed attempt."""
        if len(self._by_name) >= self.limit or len(self._by_address) >= self.limit:
            self.prune(now)
        for table, key in ((self._by_name, (address, name)), (self._by_address, address)):
            failures = table.setdefault(key, _Failures())
            failures.count += 1
            failures.last = now

    def succeeded(self, address: str, name: str) -> None:
        """A sign-in went through: that address's count for that name starts again."""
        self._by_name.pop((address, name), None)

    def prune(self, now: float) -> None:
        """Forget counts whose last failure is older than ``memory_s``."""
        for table in (self._by_name, self._by_address):
            for key in [k for k, f in table.items() if f.last < now - self.memory_s]:
                del table[key]
