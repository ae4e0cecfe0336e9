//! Sandboxes built ahead of time. Building one costs tens of milliseconds (on cgroup
//! v1 most of it is the kernel attaching init to the session's cgroups) and booting an
//! interpreter more; an agent calling `create()` in a loop should pay neither.
//!
//! A pooled session is handed out once and never comes back: `close()` destroys it,
//! so every session starts clean. Sessions are pooled per option set, since a sandbox
//! built with one memory limit or environment cannot serve another.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::session::{LocalSession, Placement};
use crate::error::CodebayError;
use crate::options::{SessionOptions, MAX_POOL_SIZE};

/// How long a refill waits after the `create()` that triggered it. Measured here: a
/// refill running at once made that session's first run ~3x slower and its close
/// 4-5x slower (15-22 ms instead of ~4 ms) on this 2-core machine.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Default)]
struct Shelf {
    ready: Vec<LocalSession>,
    /// A refill task is running for this shelf: one is enough.
    refilling: bool,
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

/// A ready session for `options`: from the pool when one is there, else built now.
/// Either way the pool is topped up in the background (needs a tokio runtime).
pub async fn acquire(
    options: SessionOptions,
    placement: Placement,
) -> Result<LocalSession, CodebayError> {
    if options.pool.size == 0 {
        return build(&options, &placement).await;
    }
    let key = key(&options, &placement);
    // A sandbox that died while it waited (its helper killed) is dropped, not handed out.
    let taken = loop {
        let next = {
            let mut shelves = shelves().lock().expect("pool lock");
            shelves.entry(key.clone()).or_default().ready.pop()
        };
        match next {
            Some(session) if session.is_gone() => {
                tokio::spawn(async move { session.close().await });
            }
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

/// Builds sessions until the shelf holds `pool.size`; a failure stops the refill
/// (the next `acquire` builds its own and so reports the error to its caller).
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
            let shelf = shelves.entry(key.clone()).or_default();
            match built {
                Ok(session) => shelf.ready.push(session),
                Err(_) => {
                    shelf.refilling = false;
                    return;
                }
            }
            if shelf.ready.len() >= size {
                shelf.refilling = false;
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
