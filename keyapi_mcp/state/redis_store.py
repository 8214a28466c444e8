"""Shared state on Redis: one credit budget and one cache for any number of server replicas.

Selected by `KEYAPI_STATE_URL=redis://host:port/db` (or `rediss://` for TLS). Same behaviour as
`SQLiteStore`, built from Redis primitives:

- Ledger: a hash of counters per UTC day (`day:<YYYY-MM-DD>`: counted, reserved, yes, no, uncertain,
  saved) that expires after `LEDGER_KEEP_DAYS`; one hash per upstream attempt (`entry:<id>`, same
  expiry); a capped list of entry keys, newest first, for `recent()`. `reserve` is one Lua script —
  check the day's counted credits against the limit, count one more, write the entry — and Redis runs
  scripts one at a time, so replicas under one daily limit can never exceed it, not even by one.
  `settle` is a script too: it moves the entry's counter from `reserved` to its outcome, so a released
  reservation stops counting. Each caller (keyapi_mcp.caller) has the same counters in
  `userday:<day>:<caller>` and its own capped list `userledger:<caller>`; the same scripts check and move
  them, so the per-user limit (KEYAPI_USER_DAILY_CREDIT_LIMIT) and the daily one hold together.
- Cache: per-video hashes (`video:<id>`) and page hashes (`page:<hash of the id set>:<n>`) holding the
  rows and `fetched_at`, with native key expiry at the cache TTL. Freshness is still checked against
  the stored `fetched_at` with the store's clock, so an injected clock works as with SQLite. Two sorted
  sets index the cache by `fetched_at` for `cached_video_count` and `prune`.
- Single-flight across replicas: `claim` sets a short lock per video id (`SET NX PX`); a replica
  that finds an id locked waits for the lock to go (`wait_released`) and then reads the shared cache.
  A lock outlives a crashed holder by at most `LOCK_TTL_SECONDS`.
- Failure: every Redis error becomes `StateStoreError` (a `[budget_exceeded]` refusal naming the
  store), so no upstream request is made without a reservation. redis-py reconnects on the next
  command and reloads the scripts after a Redis restart: the store recovers by itself.

The URL's password never appears in `description`, logs or errors. Keys are computed inside the
scripts only for cache pruning: this targets a single Redis (with replicas/sentinel), not a Cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

from keyapi_mcp.core.domain import (
    LEDGER_KEEP_DAYS,
    LOCAL_CALLER,
    Attempt,
    CachedPage,
    CachedVideo,
    Clock,
    ConsentGrant,
    DayUsage,
    LedgerEntry,
    Reservation,
    budget_refusal,
    dumps_compact,
    user_budget_refusal,
    utc_day,
)
from keyapi_mcp.errors import StateStoreError, StoreOpenError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "keyapi-mcp:"
DEFAULT_CACHE_TTL_SECONDS = 21_600
LOCK_TTL_SECONDS = 30.0
LEDGER_CAP = 1_000  # entries kept in the recent-attempts list (the day counters hold the totals)
SOCKET_TIMEOUT_SECONDS = 5.0
PRUNE_BATCH = 500
_KEEP_SECONDS = LEDGER_KEEP_DAYS * 86_400

# KEYS: day hash, entry hash, ledger list, the caller's day hash, the caller's ledger list.
# ARGV: limit, keep seconds, at, day, ids_count, page, replica, cap, user limit, caller.
# Both limits are checked before anything is counted; the refusal names the limit hit (the daily one first).
_RESERVE = """
local limit = tonumber(ARGV[1])
local counted = tonumber(redis.call('HGET', KEYS[1], 'counted') or '0')
if limit > 0 and counted >= limit then
  return {0, counted, 'daily'}
end
local ulimit = tonumber(ARGV[9])
local mine = tonumber(redis.call('HGET', KEYS[4], 'counted') or '0')
if ulimit > 0 and mine >= ulimit then
  return {0, mine, 'user'}
end
redis.call('HINCRBY', KEYS[1], 'counted', 1)
redis.call('HINCRBY', KEYS[1], 'reserved', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[4], 'counted', 1)
redis.call('HINCRBY', KEYS[4], 'reserved', 1)
redis.call('EXPIRE', KEYS[4], ARGV[2])
redis.call('HSET', KEYS[2], 'at', ARGV[3], 'day', ARGV[4], 'ids_count', ARGV[5], 'page', ARGV[6],
           'outcome', 'in_flight', 'charged', 'reserved', 'replica', ARGV[7], 'caller', ARGV[10])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for _, list in ipairs({KEYS[3], KEYS[5]}) do
  redis.call('LPUSH', list, KEYS[2])
  redis.call('LTRIM', list, 0, tonumber(ARGV[8]) - 1)
  redis.call('EXPIRE', list, ARGV[2])
end
return {1, counted + 1, ''}
"""

# KEYS: entry hash, day hash[, the caller's day hash].  ARGV: http_status, outcome, charged, request_id, keep seconds.
# Moves the entry from its previous charged state to the new one, in the day's and the caller's counters;
# `counted` follows whether each state counts against the limit (reserved, yes, uncertain) so a repeated
# settle stays consistent.
_SETTLE = """
local prev = redis.call('HGET', KEYS[1], 'charged')
if not prev then
  return 0
end
local function counts(c) return c == 'reserved' or c == 'yes' or c == 'uncertain' end
local new = ARGV[3]
if prev ~= new then
  for i = 2, #KEYS do
    redis.call('HINCRBY', KEYS[i], prev, -1)
    redis.call('HINCRBY', KEYS[i], new, 1)
    if counts(prev) and not counts(new) then
      redis.call('HINCRBY', KEYS[i], 'counted', -1)
    elseif counts(new) and not counts(prev) then
      redis.call('HINCRBY', KEYS[i], 'counted', 1)
    end
    redis.call('EXPIRE', KEYS[i], ARGV[5])
  end
end
redis.call('HSET', KEYS[1], 'http_status', ARGV[1], 'outcome', ARGV[2], 'charged', new, 'request_id', ARGV[4])
return 1
"""

# KEYS: video index zset, then one video hash per id.  ARGV: fetched_at, ttl ms, rows JSON per id.
# An entry is replaced only by one fetched at the same time or later (as in SQLite).
_PUT_VIDEOS = """
local fetched = tonumber(ARGV[1])
for i = 2, #KEYS do
  local old = redis.call('HGET', KEYS[i], 'fetched_at')
  if (not old) or tonumber(old) <= fetched then
    redis.call('HSET', KEYS[i], 'rows', ARGV[i + 1], 'fetched_at', ARGV[1])
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    redis.call('ZADD', KEYS[1], fetched, KEYS[i])
  end
end
return 1
"""

# KEYS: page index zset, page hash.  ARGV: rows JSON, fetched_at, ttl ms.
_PUT_PAGE = """
redis.call('HSET', KEYS[2], 'rows', ARGV[1], 'fetched_at', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), KEYS[2])
return 1
"""

# KEYS: one index zset.  ARGV: since, batch.  Deletes up to `batch` entries fetched at or before `since`
# (their keys are the index members); returns how many index members were looked at.
_PRUNE = """
local since = tonumber(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(stale) do
  local fetched = redis.call('HGET', key, 'fetched_at')
  if (not fetched) or tonumber(fetched) <= since then
    redis.call('DEL', key)
  end
  redis.call('ZREM', KEYS[1], key)
end
return #stale
"""

# KEYS: lock keys.  ARGV: the holder's token, lock lifetime in ms.  Extends only locks still held by that token.
_EXTEND = """
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    n = n + redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return n
"""

# KEYS: lock keys.  ARGV: the holder's token.  Deletes only locks still held by that token.
_RELEASE = """
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    n = n + redis.call('DEL', KEYS[i])
  end
end
return n
"""


# KEYS: consent hash.  ARGV: now.  Marks an unexpired, unused token used; 1 for exactly one caller.
_USE_CONSENT = """
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '0')
if expires <= tonumber(ARGV[1]) then
  return 0
end
return redis.call('HSETNX', KEYS[1], 'used_at', ARGV[1])
"""


def redact_url(url: str) -> str:
    """The URL without its password (and user): safe for logs, errors and `description`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "redis://<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    auth = "***@" if parts.username or parts.password else ""
    return f"{parts.scheme}://{auth}{host}{port}{parts.path}"


def _ttl_ms(ttl: float, age: float) -> int:
    """Native expiry for an entry of `age` seconds under `ttl`: what is left, at least one second."""
    return max(1_000, math.ceil((ttl - max(0.0, age)) * 1000))


class RedisStore:
    """The shared store: every replica pointing at one Redis spends from one budget and one cache."""

    def __init__(
        self,
        redis: Any,
        *,
        clock: Clock = time.time,
        description: str = "Redis state store",
        prefix: str = DEFAULT_PREFIX,
        cache_ttl: float = DEFAULT_CACHE_TTL_SECONDS,
        lock_ttl: float = LOCK_TTL_SECONDS,
        secret: str | None = None,
    ) -> None:
        """`redis` is a `redis.asyncio.Redis` with `decode_responses=True` (use `from_url`)."""
        self._redis = redis
        self._clock = clock
        self.description = description
        self._prefix = prefix
        self._cache_ttl = cache_ttl
        self._lock_ttl = lock_ttl
        self._secret = secret
        self._replica = f"{socket.gethostname()}:{os.getpid()}"
        self._tokens: dict[str, str] = {}  # video id -> token of the lock this process holds
        self._renewers: dict[str, asyncio.Task[None]] = {}  # token -> task keeping its locks alive
        self._down = False  # for logging the outage and the recovery once each
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)
        self._put_videos = redis.register_script(_PUT_VIDEOS)
        self._put_page = redis.register_script(_PUT_PAGE)
        self._prune = redis.register_script(_PRUNE)
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)
        self._use_consent = redis.register_script(_USE_CONSENT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock = time.time,
        cache_ttl: float = DEFAULT_CACHE_TTL_SECONDS,
        prefix: str = DEFAULT_PREFIX,
        lock_ttl: float = LOCK_TTL_SECONDS,
        socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    ) -> RedisStore:
        """Build the store for `url` (no connection yet: an unreachable Redis refuses calls, not the start)."""
        safe = redact_url(url)
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff
        except ImportError:
            raise StoreOpenError(
                f"KEYAPI_STATE_URL points at Redis ({safe}) but the `redis` package is not installed. "
                "Install it with: pip install 'keyapi-mcp[redis]'."
            ) from None
        try:
            client = aioredis.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # A stale pooled connection after a Redis restart is retried on a fresh one; an
                # unreachable Redis fails within a fraction of a second rather than stalling the call.
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
                health_check_interval=30,
            )
        except (ValueError, TypeError) as exc:
            raise StoreOpenError(f"KEYAPI_STATE_URL ({safe}) is not a usable Redis URL: {exc}") from None
        password = urlsplit(url).password
        return cls(
            client,
            clock=clock,
            description=f"Redis state store {safe}",
            prefix=prefix,
            cache_ttl=cache_ttl,
            lock_ttl=lock_ttl,
            secret=password,
        )

    def now(self) -> float:
        return self._clock()

    # -- plumbing -------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _fail(self, exc: BaseException) -> NoReturn:
        detail = f"{type(exc).__name__}: {exc}".rstrip(". ")
        if self._secret:  # redis-py does not put it in messages; make sure of it
            detail = detail.replace(self._secret, "***").replace(unquote(self._secret), "***")
        if not self._down:
            self._down = True
            log.warning("%s is not usable (%s); refusing paid calls until it answers again", self.description, detail)
        raise StateStoreError(
            f"The shared credit ledger ({self.description}) is not usable: {detail}.",
            hint="The server retries Redis on every call and recovers by itself when it answers again; check "
            "that Redis is running and KEYAPI_STATE_URL points at it.",
        ) from None

    async def _call(self, awaitable: Any) -> Any:
        """Await one Redis operation; any Redis or socket failure becomes a `StateStoreError`."""
        from redis.exceptions import RedisError

        try:
            result = await awaitable
        except (RedisError, OSError) as exc:  # OSError covers TimeoutError and refused sockets
            self._fail(exc)
        if self._down:
            self._down = False
            log.warning("%s answers again", self.description)
        return result

    # -- ledger ---------------------------------------------------------------------------------

    async def reserve(
        self, *, ids_count: int, page: int, daily_limit: int, caller: str = LOCAL_CALLER, user_limit: int = 0
    ) -> Reservation:
        now = self._clock()
        day = utc_day(now)
        entry = uuid.uuid4().hex
        ok, counted, which = await self._call(
            self._reserve(
                keys=[
                    self._key("day", day),
                    self._key("entry", entry),
                    self._key("ledger"),
                    self._key("userday", day, caller),
                    self._key("userledger", caller),
                ],
                args=[
                    max(0, daily_limit),
                    _KEEP_SECONDS,
                    repr(now),
                    day,
                    ids_count,
                    page,
                    self._replica,
                    LEDGER_CAP,
                    max(0, user_limit),
                    caller,
                ],
            )
        )
        if not int(ok):
            if which == "user":
                raise user_budget_refusal(int(counted), user_limit, now)
            raise budget_refusal(int(counted), daily_limit, now)
        return Reservation(id=entry, day=day, caller=caller)

    async def settle(self, reservation: Reservation, attempt: Attempt) -> None:
        await self._call(
            self._settle(
                keys=[
                    self._key("entry", str(reservation.id)),
                    self._key("day", reservation.day),
                    self._key("userday", reservation.day, reservation.caller),
                ],
                args=[
                    "" if attempt.http_status is None else attempt.http_status,
                    attempt.outcome,
                    attempt.charged,
                    attempt.request_id or "",
                    _KEEP_SECONDS,
                ],
            )
        )

    async def usage_today(self) -> DayUsage:
        day = utc_day(self._clock())
        counted, reserved, uncertain, saved = await self._call(
            self._redis.hmget(self._key("day", day), ["counted", "reserved", "uncertain", "saved"])
        )
        return DayUsage(
            spent=int(counted or 0),
            uncertain=int(uncertain or 0) + int(reserved or 0),
            saved=int(saved or 0),
        )

    async def usage_for(self, caller: str) -> DayUsage:
        day = utc_day(self._clock())
        counted, reserved, uncertain = await self._call(
            self._redis.hmget(self._key("userday", day, caller), ["counted", "reserved", "uncertain"])
        )
        return DayUsage(spent=int(counted or 0), uncertain=int(uncertain or 0) + int(reserved or 0), saved=0)

    async def recent(self, limit: int = 10, caller: str | None = None) -> list[LedgerEntry]:
        if limit <= 0:
            return []
        ledger = self._key("ledger") if caller is None else self._key("userledger", caller)
        keys = await self._call(self._redis.lrange(ledger, 0, limit - 1))
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        entries: list[LedgerEntry] = []
        for data in await self._call(pipe.execute()):
            if not data:  # expired
                continue
            entries.append(
                LedgerEntry(
                    at=float(data.get("at", 0.0)),
                    page=int(data["page"]) if data.get("page") else None,
                    ids_count=int(data.get("ids_count", 0)),
                    http_status=int(data["http_status"]) if data.get("http_status") else None,
                    outcome=data.get("outcome", ""),
                    charged=data.get("charged", "reserved"),
                    request_id=data.get("request_id") or None,
                )
            )
        return entries

    async def add_saved(self, credits: int) -> None:
        if credits <= 0:
            return
        key = self._key("day", utc_day(self._clock()))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(key, "saved", credits)
        pipe.expire(key, _KEEP_SECONDS)
        await self._call(pipe.execute())

    # -- cache ----------------------------------------------------------------------------------

    async def get_videos(self, video_ids: Sequence[str], max_age: float) -> dict[str, CachedVideo]:
        if not video_ids or max_age <= 0:
            return {}
        since = self._clock() - max_age
        pipe = self._redis.pipeline(transaction=False)
        for vid in video_ids:
            pipe.hmget(self._key("video", vid), ["rows", "fetched_at"])
        found: dict[str, CachedVideo] = {}
        for vid, (rows, fetched) in zip(video_ids, await self._call(pipe.execute()), strict=True):
            if rows is not None and fetched is not None and float(fetched) > since:
                found[vid] = CachedVideo(vid, json.loads(rows), float(fetched))
        return found

    async def put_videos(self, videos: dict[str, list[dict[str, Any]]], fetched_at: float) -> None:
        if not videos or self._cache_ttl <= 0:
            return
        ttl = _ttl_ms(self._cache_ttl, self._clock() - fetched_at)
        keys = [self._key("videos")] + [self._key("video", vid) for vid in videos]
        await self._call(
            self._put_videos(
                keys=keys, args=[repr(fetched_at), ttl, *(dumps_compact(rows) for rows in videos.values())]
            )
        )

    def _page_key(self, key: str, page: int) -> str:
        # The query key is up to 50 comma-joined ids: a digest keeps Redis keys short.
        return self._key("page", hashlib.sha256(key.encode()).hexdigest()[:40], str(page))

    async def get_page(self, key: str, page: int, max_age: float) -> CachedPage | None:
        if max_age <= 0:
            return None
        since = self._clock() - max_age
        rows, fetched = await self._call(self._redis.hmget(self._page_key(key, page), ["rows", "fetched_at"]))
        if rows is None or fetched is None or float(fetched) <= since:
            return None
        return CachedPage(json.loads(rows), float(fetched))

    async def put_page(self, key: str, page: int, rows: list[Any], fetched_at: float) -> None:
        if self._cache_ttl <= 0:
            return
        ttl = _ttl_ms(self._cache_ttl, self._clock() - fetched_at)
        await self._call(
            self._put_page(
                keys=[self._key("pages"), self._page_key(key, page)], args=[dumps_compact(rows), repr(fetched_at), ttl]
            )
        )

    async def cached_video_count(self, max_age: float) -> int:
        if max_age <= 0:
            return 0
        since = self._clock() - max_age
        return int(await self._call(self._redis.zcount(self._key("videos"), f"({since!r}", "+inf")))

    async def cached_video_ids(self, max_age: float, limit: int) -> list[str]:
        """Ids of cached videos, most recently fetched first (argument completion offers them)."""
        if max_age <= 0 or limit <= 0:
            return []
        since = self._clock() - max_age
        keys = await self._call(
            self._redis.zrevrangebyscore(self._key("videos"), "+inf", f"({since!r}", start=0, num=limit)
        )
        prefix = self._key("video", "")  # index members are the video hashes' keys
        return [key.removeprefix(prefix) for key in keys if key.startswith(prefix)]

    async def prune(self, max_age: float) -> None:
        """Drop cache entries fetched `max_age` ago or earlier. Ledger keys expire by themselves."""
        since = self._clock() - max_age
        for index in (self._key("videos"), self._key("pages")):
            while int(await self._call(self._prune(keys=[index], args=[repr(since), PRUNE_BATCH]))) >= PRUNE_BATCH:
                pass

    # -- consent tokens (keyapi_mcp.core.consent) ------------------------------------------------

    async def put_consent(self, digest: str, grant: ConsentGrant) -> None:
        key = self._key("consent", digest)
        # Native expiry only cleans up (a minute after the grant's end); validity is checked against
        # `expires_at` with the store's clock, as for the cache.
        ttl = _ttl_ms(grant.expires_at - self._clock() + 60, 0)
        fields = {
            "caller": grant.caller,
            "ids_key": grant.ids_key,
            "page": grant.page,
            "credits": grant.credits,
            "expires_at": repr(grant.expires_at),
        }
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, ttl)
        await self._call(pipe.execute())

    async def get_consent(self, digest: str) -> ConsentGrant | None:
        raw = await self._call(self._redis.hgetall(self._key("consent", digest)))
        if not raw or float(raw.get("expires_at", 0)) <= self._clock():
            return None
        return ConsentGrant(
            caller=raw["caller"],
            ids_key=raw["ids_key"],
            page=int(raw["page"]),
            credits=int(raw["credits"]),
            expires_at=float(raw["expires_at"]),
            used="used_at" in raw,
        )

    async def use_consent(self, digest: str) -> bool:
        # One script: Redis runs it alone, so of replicas racing with one token exactly one marks it used.
        used = await self._call(self._use_consent(keys=[self._key("consent", digest)], args=[repr(self._clock())]))
        return bool(int(used) == 1)

    # -- single-flight across replicas ----------------------------------------------------------

    async def claim(self, video_ids: Sequence[str]) -> set[str]:
        """Lock the ids nobody else is fetching; return those now held by this process."""
        if not video_ids:
            return set()
        token = uuid.uuid4().hex
        ttl = max(1, int(self._lock_ttl * 1000))
        pipe = self._redis.pipeline(transaction=False)
        for vid in video_ids:
            pipe.set(self._key("lock", vid), token, nx=True, px=ttl)
        results = await self._call(pipe.execute())
        held = {vid for vid, ok in zip(video_ids, results, strict=True) if ok}
        for vid in held:
            self._tokens[vid] = token
        if held:
            # A walk may outlast one lock lifetime (many pages, a slow upstream): keep the locks alive while
            # this process holds them, so no other replica starts paying for the same ids. A crashed holder
            # stops renewing and its locks expire within one lifetime.
            self._renewers[token] = asyncio.create_task(self._renew(token))
        return held

    async def _renew(self, token: str) -> None:
        ttl = max(1, int(self._lock_ttl * 1000))
        while True:
            await asyncio.sleep(self._lock_ttl / 3)
            keys = [self._key("lock", vid) for vid, held_by in self._tokens.items() if held_by == token]
            if not keys:
                return
            try:
                await self._call(self._extend(keys=keys, args=[token, ttl]))
            except StateStoreError:
                log.debug("could not extend %d single-flight lock(s); retrying", len(keys))

    async def release(self, video_ids: Iterable[str]) -> None:
        """Unlock ids claimed by this process. Best effort: a lock left behind expires by itself."""
        by_token: dict[str, list[str]] = {}
        for vid in video_ids:
            token = self._tokens.pop(vid, None)
            if token is not None:
                by_token.setdefault(token, []).append(self._key("lock", vid))
        for token, keys in by_token.items():
            if token not in self._tokens.values() and (renewer := self._renewers.pop(token, None)) is not None:
                renewer.cancel()
            try:
                await self._call(self._release(keys=keys, args=[token]))
            except StateStoreError:
                log.debug("could not release %d single-flight lock(s); they expire by themselves", len(keys))

    async def wait_released(self, video_ids: Sequence[str]) -> None:
        """Wait until no replica holds a lock on these ids (at most about one lock lifetime)."""
        if not video_ids:
            return
        keys = [self._key("lock", vid) for vid in video_ids]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lock_ttl + 1.0
        delay = 0.02
        while await self._call(self._redis.exists(*keys)) and loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def close(self) -> None:
        for renewer in self._renewers.values():
            renewer.cancel()
        self._renewers.clear()
        try:
            await self._redis.aclose()
        except Exception:  # closing a client whose server is gone must not mask the real outcome
            log.debug("error closing the Redis client", exc_info=True)
