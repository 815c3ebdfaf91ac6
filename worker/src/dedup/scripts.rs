//! The Lua scripts behind each dedup step. Each reads and writes one key atomically on
//! the server, so two workers can never both see a key as free, and a stale owner can
//! never delete a claim that is no longer its own.
//!
//! Lua rather than `SET … NX GET` (Redis ≥ 7.0) so that any Redis ≥ 2.6 will do; the
//! scripts are sent by hash, loaded on `NOSCRIPT` by [`redis::Script`].

use redis::Script;

/// The value of a key whose notification has been applied (owners are UUIDs, never this).
pub(super) const DONE: &str = "done";

/// `KEYS[1]` the key, `ARGV[1]` our owner token, `ARGV[2]` the claim TTL in ms.
/// Returns [`CLAIM_ACQUIRED`], [`CLAIM_DONE`] or [`CLAIM_HELD`].
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == 'done' then
  return 2
end
return 3
";
pub(super) const CLAIM_ACQUIRED: i64 = 1;
pub(super) const CLAIM_DONE: i64 = 2;
pub(super) const CLAIM_HELD: i64 = 3;

/// `KEYS[1]` the key, `ARGV[1]` our owner token, `ARGV[2]` the done TTL in ms.
///
/// Always writes `done`: this runs after the database committed, so whatever the key
/// held, the notification *is* applied. The return value only says what it held —
/// [`DONE_WAS_OURS`], [`DONE_WAS_FREE`] (our claim expired during the apply),
/// [`DONE_WAS_DONE`], or [`DONE_WAS_OTHER`] (our claim expired and another worker
/// claimed; its own apply will find the database's unique key).
const MARK_DONE: &str = r"
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
if previous == ARGV[1] then
  return 1
elseif not previous then
  return 2
elseif previous == 'done' then
  return 3
end
return 4
";
pub(super) const DONE_WAS_OURS: i64 = 1;
pub(super) const DONE_WAS_FREE: i64 = 2;
pub(super) const DONE_WAS_DONE: i64 = 3;
pub(super) const DONE_WAS_OTHER: i64 = 4;

/// `KEYS[1]` the key, `ARGV[1]` our owner token. Deletes the key only if it still holds
/// our claim; returns the number of keys deleted.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The three scripts, hashed once per [`super::Dedup`].
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) mark_done: Script,
    pub(super) release: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            mark_done: Script::new(MARK_DONE),
            release: Script::new(RELEASE),
        }
    }
}
