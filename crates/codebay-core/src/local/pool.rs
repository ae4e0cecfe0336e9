//! Sandboxes built ahead of time. Building one costs tens of milliseconds (on cgroup
//! v1 most of it is the kernel attaching init to the session's cgroups) and booting an
//! interpreter more; an agent calling `create()` in a loop should pay neither.
//!
//! A pooled session is handed out once and never comes back: `close()` destroys it,
//! so every session starts clean. Sessions are pooled per option set, since a sandbox
//! built with one memory limit or environment cannot serve another; the pool is bounded
//! across all option sets (least recently used first out) and a sandbox left unused
//! expires, since each idles at ~15 MiB.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::session::{LocalSession, Placement};
use crate::error::CodebayError;
use crate::options::{SessionOptions, MAX_POOL_SIZE};

/// How long a refill waits after the `create()` that triggered it. Measured here: a
/// refill running at once made that session's first run ~3x slower and its close
/// 4-5x slower (15-22 ms instead of ~4 ms) on this 2-core machine.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// The most idle sandboxes the pool holds, over every option set together.
pub const MAX_IDLE_SANDBOXES: usize = 4;

/// A pooled sandbox unused for this long is closed.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(300);

/// One option set's idle sandboxes (`S`: a session; anything in the unit tests).
struct Shelf<S = LocalSession> {
    ready: Vec<(S, Instant)>,
    /// A refill task is running for this shelf: one is enough.
    refilling: bool,
    /// The last `create()` for these options: the least recently used shelf gives
    /// up its sandboxes first.
    used: Option<Instant>,
}

impl<S> Default for Shelf<S> {
    fn default() -> Self {
        Shelf {
            ready: Vec::new(),
            refilling: false,
            used: None,
        }
    }
}

type Key = String;

fn shelves() -> &'static Mutex<HashMap<Key, Shelf>> {
    static SHELVES: OnceLock<Mutex<HashMap<Key, Shelf>>> = OnceLock::new();
    SHELVES.get_or_init(Default::default)
}

fn key(options: &SessionOptions, placement: &Placement) -> Key {
    // Debug of plain data with ordered maps: equal options give equal keys.
    format!("{options:?}|{placement:?}")
}

/// Closes sessions off the caller's path.
fn close_later(sessions: Vec<LocalSession>) {
    if !sessions.is_empty() {
        tokio::spawn(async move {
            for session in sessions {
                session.close().await;
            }
        });
    }
}

/// Takes out what has been idle for [`IDLE_EXPIRY`] at `now`; the caller closes it.
fn take_expired<S>(shelves: &mut HashMap<Key, Shelf<S>>, now: Instant) -> Vec<S> {
    let mut expired = Vec::new();
    for shelf in shelves.values_mut() {
        let (old, fresh): (Vec<_>, Vec<_>) = std::mem::take(&mut shelf.ready)
            .into_iter()
            .partition(|(_, since)| now.duration_since(*since) >= IDLE_EXPIRY);
        shelf.ready = fresh;
        expired.extend(old.into_iter().map(|(s, _)| s));
    }
    expired
}

/// Once per process: a task that closes expired sandboxes even when nobody calls
/// `create()` any more.
fn start_expiry() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        tokio::spawn(async {
            loop {
                tokio::time::sleep(IDLE_EXPIRY / 5).await;
                let expired =
                    take_expired(&mut shelves().lock().expect("pool lock"), Instant::now());
                close_later(expired);
            }
        });
    });
}

/// A ready session for `options`: from the pool when one is there, else built now.
/// Either way the pool is topped up in the background (needs a tokio runtime).
pub async fn acquire(
    options: SessionOptions,
    placement: Placement,
) -> Result<LocalSession, CodebayError> {
    if options.pool.size == 0 {
        return build(&options, &placement).await;
    }
    start_expiry();
    let key = key(&options, &placement);
    // A sandbox that died while it waited (its helper killed) is dropped, not handed out.
    let taken = loop {
        let (next, expired) = {
            let mut shelves = shelves().lock().expect("pool lock");
            let expired = take_expired(&mut shelves, Instant::now());
            let shelf = shelves.entry(key.clone()).or_default();
            shelf.used = Some(Instant::now());
            (shelf.ready.pop().map(|(s, _)| s), expired)
        };
        close_later(expired);
        match next {
            Some(session) if session.is_gone() => close_later(vec![session]),
            other => break other,
        }
    };
    let session = match taken {
        Some(session) => session,
        None => build(&options, &placement).await?,
    };
    refill(key, options, placement);
    Ok(session)
}

/// A session with its interpreters started and its modules imported: what `create()`
/// hands out, from the pool or not.
async fn build(
    options: &SessionOptions,
    placement: &Placement,
) -> Result<LocalSession, CodebayError> {
    let session = LocalSession::create(options, placement).await?;
    // `prewarm` holds the languages of `preload` (SessionOptions::from_json).
    let ready = match session.prewarm(&options.pool.prewarm).await {
        Ok(()) => session.preload(&options.pool.preload).await,
        Err(err) => Err(err),
    };
    if let Err(err) = ready {
        session.close().await;
        return Err(err);
    }
    Ok(session)
}

/// Makes room for one more idle sandbox on `key`'s shelf: at the cap, the least
/// recently used other shelf gives one up. False when there is no room (every idle
/// sandbox is this shelf's, or its options were used last).
fn make_room<S>(shelves: &mut HashMap<Key, Shelf<S>>, key: &Key) -> (bool, Option<S>) {
    let total: usize = shelves.values().map(|s| s.ready.len()).sum();
    if total < MAX_IDLE_SANDBOXES {
        return (true, None);
    }
    let ours = shelves.get(key).and_then(|s| s.used);
    let victim = shelves
        .iter()
        .filter(|(k, s)| *k != key && !s.ready.is_empty() && s.used <= ours)
        .min_by_key(|(_, s)| s.used)
        .map(|(k, _)| k.clone());
    match victim {
        Some(k) => {
            let shelf = shelves.get_mut(&k).expect("just found");
            // The oldest of that shelf goes.
            let (session, _) = shelf.ready.remove(0);
            (true, Some(session))
        }
        None => (false, None),
    }
}

/// Builds sessions until the shelf holds `pool.size` (within the global cap); a
/// failure stops the refill (the next `acquire` builds its own and so reports the
/// error to its caller).
fn refill(key: Key, options: SessionOptions, placement: Placement) {
    let size = options.pool.size.min(MAX_POOL_SIZE);
    {
        let mut shelves = shelves().lock().expect("pool lock");
        let shelf = shelves.entry(key.clone()).or_default();
        if shelf.refilling || shelf.ready.len() >= size {
            return;
        }
        shelf.refilling = true;
    }
    tokio::spawn(async move {
        // Building a sandbox takes the kernel's cgroup attach lock and a core for the
        // interpreter's boot: let the caller's first runs (and a quick close) go first.
        tokio::time::sleep(REFILL_DELAY).await;
        loop {
            let built = build(&options, &placement).await;
            let mut shelves = shelves().lock().expect("pool lock");
            let session = match built {
                Ok(session) => session,
                Err(_) => {
                    shelves.entry(key.clone()).or_default().refilling = false;
                    return;
                }
            };
            let (room, evicted) = make_room(&mut shelves, &key);
            let shelf = shelves.entry(key.clone()).or_default();
            let mut surplus: Vec<LocalSession> = evicted.into_iter().collect();
            if room {
                shelf.ready.push((session, Instant::now()));
            } else {
                surplus.push(session);
            }
            let done = !room || shelf.ready.len() >= size;
            if done {
                shelf.refilling = false;
            }
            drop(shelves);
            close_later(surplus);
            if done {
                return;
            }
        }
    });
}

/// How many sessions are ready for these options (for tests and benchmarks).
pub fn ready_count(options: &SessionOptions, placement: &Placement) -> usize {
    let shelves = shelves().lock().expect("pool lock");
    shelves
        .get(&key(options, placement))
        .map_or(0, |s| s.ready.len())
}

/// Closes every idle pooled sandbox now; returns how many. Refills already running
/// finish their current sandbox and then put it on the shelf, as `create()` would.
pub async fn drain() -> usize {
    let all: Vec<LocalSession> = {
        let mut shelves = shelves().lock().expect("pool lock");
        shelves
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.ready))
            .map(|(s, _)| s)
            .collect()
    };
    let count = all.len();
    for session in all {
        session.close().await;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shelf(ready: &[(u32, Instant)], used: Instant) -> Shelf<u32> {
        Shelf {
            ready: ready.to_vec(),
            refilling: false,
            used: Some(used),
        }
    }

    #[test]
    fn a_sandbox_idle_for_the_expiry_is_taken_out() {
        let t0 = Instant::now();
        let mut shelves = HashMap::from([
            (
                "a".to_string(),
                shelf(&[(1, t0), (2, t0 + IDLE_EXPIRY / 2)], t0),
            ),
            ("b".to_string(), shelf(&[(3, t0 + IDLE_EXPIRY)], t0)),
        ]);
        assert!(take_expired(&mut shelves, t0 + IDLE_EXPIRY / 2).is_empty());
        assert_eq!(take_expired(&mut shelves, t0 + IDLE_EXPIRY), vec![1]);
        let mut later = take_expired(&mut shelves, t0 + IDLE_EXPIRY * 2);
        later.sort();
        assert_eq!(later, vec![2, 3]);
        assert!(shelves.values().all(|s| s.ready.is_empty()));
    }

    #[test]
    fn at_the_cap_the_least_recently_used_other_shelf_gives_up_its_oldest() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut shelves = HashMap::from([
            ("old".to_string(), shelf(&[(1, t0), (2, t0)], t0)),
            ("mid".to_string(), shelf(&[(3, t0)], t0 + second)),
            ("new".to_string(), shelf(&[(4, t0)], t0 + 2 * second)),
        ]);
        assert_eq!(MAX_IDLE_SANDBOXES, 4);
        assert_eq!(make_room(&mut shelves, &"new".to_string()), (true, Some(1)));
        // Below the cap there is room without an eviction.
        assert_eq!(make_room(&mut shelves, &"new".to_string()), (true, None));
        shelves.get_mut("new").unwrap().ready.push((5, t0));
        // The least recently used shelf may not take from one used after it.
        assert_eq!(make_room(&mut shelves, &"old".to_string()), (false, None));
        assert_eq!(make_room(&mut shelves, &"mid".to_string()), (true, Some(2)));
    }
}
