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

#[derive(Default)]
struct Shelf {
    ready: Vec<(LocalSession, Instant)>,
    /// A refill task is running for this shelf: one is enough.
    refilling: bool,
    /// The last `create()` for these options: the least recently used shelf gives
    /// up its sandboxes first.
    used: Option<Instant>,
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

/// Takes out what expired; the caller closes it.
fn take_expired(shelves: &mut HashMap<Key, Shelf>) -> Vec<LocalSession> {
    let mut expired = Vec::new();
    for shelf in shelves.values_mut() {
        let (old, fresh): (Vec<_>, Vec<_>) = std::mem::take(&mut shelf.ready)
            .into_iter()
            .partition(|(_, since)| since.elapsed() >= IDLE_EXPIRY);
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
                let expired = take_expired(&mut shelves().lock().expect("pool lock"));
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
            let expired = take_expired(&mut shelves);
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

async fn build(
    options: &SessionOptions,
    placement: &Placement,
) -> Result<LocalSession, CodebayError> {
    let session = LocalSession::create(options, placement).await?;
    if let Err(err) = session.prewarm(&options.pool.prewarm).await {
        session.close().await;
        return Err(err);
    }
    Ok(session)
}

/// Makes room for one more idle sandbox on `key`'s shelf: at the cap, the least
/// recently used other shelf gives one up. False when there is no room (every idle
/// sandbox is this shelf's, or its options were used last).
fn make_room(shelves: &mut HashMap<Key, Shelf>, key: &Key) -> (bool, Option<LocalSession>) {
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
