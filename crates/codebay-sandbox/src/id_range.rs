//! A host uid/gid range of its own for every live session, so that no per-uid kernel
//! counter (fds in flight over unix sockets, inotify instances, pending signals, ...) is
//! shared between two sessions. Ranges are claimed with a lock file each, as
//! systemd-nspawn's `--private-users=pick` does: `flock` is atomic across every process
//! on the machine and is released by the kernel when the holder dies, however it dies.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::namespaces::{HOST_ID_BASE, ID_RANGE};
use crate::SandboxError;

/// Where the claims live: a root-only directory of lock files, one per range.
pub const CLAIMS_DIR: &str = "/run/codebay/id-ranges";
/// How many sessions can be alive at once on one machine: ranges 1000000 + k·65536
/// for k below this stay under 2^31.
pub const RANGES: u32 = 4096;

/// A claimed range: its first host id. The claim lasts as long as this value, and as
/// long as any process that inherited its descriptor (init does, until it exits).
#[derive(Debug)]
pub struct IdRange {
    pub base: u32,
    _claim: File,
}

pub fn claim() -> Result<IdRange, SandboxError> {
    claim_in(Path::new(CLAIMS_DIR))
}

pub fn claim_in(dir: &Path) -> Result<IdRange, SandboxError> {
    let err = |what: String, e: std::io::Error| SandboxError::IdMap(format!("{what}: {e}"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(format!("cannot create {}", dir.display()), e))?;
    // Start at a pseudo-random range so concurrent helpers rarely contend for one lock.
    let start = std::process::id() % RANGES;
    for i in 0..RANGES {
        let k = (start + i) % RANGES;
        let path = dir.join(k.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| err(format!("cannot open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(IdRange {
                base: HOST_ID_BASE + k * ID_RANGE,
                _claim: file,
            });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err(format!("cannot lock {}", path.display()), e));
        }
    }
    Err(SandboxError::IdMap(format!(
        "all {RANGES} host id ranges are in use by live sessions"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_claims_get_two_ranges_and_a_released_one_comes_back() {
        let dir = std::env::temp_dir().join(format!("codebay-id-ranges-{}", std::process::id()));
        let a = claim_in(&dir).unwrap();
        let b = claim_in(&dir).unwrap();
        assert_ne!(a.base, b.base);
        assert_eq!((a.base - HOST_ID_BASE) % ID_RANGE, 0);
        let freed = a.base;
        drop(a);
        let c = claim_in(&dir).unwrap();
        assert_eq!(c.base, freed, "a released range is claimed again first");
        drop((b, c));
        fs::remove_dir_all(&dir).unwrap();
    }
}
