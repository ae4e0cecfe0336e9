//! A host uid/gid range of its own for every live session, so that no per-uid kernel
//! counter (fds in flight over unix sockets, inotify instances, pending signals, ...) is
//! shared between two sessions. Ranges are claimed with a lock file each, as
//! systemd-nspawn's `--private-users=pick` does: `flock` is atomic across every process
//! on the machine and is released by the kernel when the holder dies, however it dies.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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
    let (k, claim) = claim_index(dir, RANGES, "host id ranges")?;
    Ok(IdRange {
        base: HOST_ID_BASE + k * ID_RANGE,
        _claim: claim,
    })
}

/// Claims the first free index below `count` with a lock file in `dir` (made 0700).
fn claim_index(dir: &Path, count: u32, what: &str) -> Result<(u32, File), SandboxError> {
    let err = |what: String, e: std::io::Error| SandboxError::IdMap(format!("{what}: {e}"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(format!("cannot create {}", dir.display()), e))?;
    // Start at a pseudo-random index so concurrent helpers rarely contend for one lock.
    let start = std::process::id() % count;
    for i in 0..count {
        let k = (start + i) % count;
        let path = dir.join(k.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| err(format!("cannot open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok((k, file));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err(format!("cannot lock {}", path.display()), e));
        }
    }
    Err(SandboxError::IdMap(format!(
        "all {count} {what} are in use by live sessions"
    )))
}

/// A subordinate uid and gid of the user's (`/etc/subuid`, `/etc/subgid`) for the
/// session's code, so that it shares no per-user counter with the user's own
/// processes, nor with another session. Mapped by the setuid `newuidmap`/`newgidmap`.
#[derive(Debug)]
pub struct SubordinateIds {
    pub uid: u32,
    pub gid: u32,
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
    _claim: File,
}

/// Where shadow's id-map helpers are installed (package `uidmap`). Fixed paths: the
/// helper's PATH is the caller's.
const MAP_TOOL_DIRS: [&str; 3] = ["/usr/bin", "/bin", "/usr/sbin"];

fn map_tool(name: &str) -> Option<PathBuf> {
    MAP_TOOL_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The first `start:count` range of `user` (by name or uid) in a subuid/subgid file.
pub fn subordinate_range(text: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let matches = Some(who) == name || who.parse::<u32>().ok() == Some(id);
        let (start, count) = (start.parse().ok()?, count.parse::<u32>().ok()?);
        (matches && count > 0).then_some((start, count))
    })
}

fn user_name(uid: u32) -> Option<String> {
    // Read /etc/passwd rather than getpwuid: no NSS modules loaded into this process.
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _pw = f.next();
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// The user's subordinate ids, when `newuidmap` and `newgidmap` are installed and the
/// user has ranges: `None` otherwise (the session then maps the user's own id only).
/// A claim that fails is an error: the user has them, so they are not silently given up.
pub fn subordinate(uid: u32, gid: u32) -> Result<Option<SubordinateIds>, SandboxError> {
    let (Some(newuidmap), Some(newgidmap)) = (map_tool("newuidmap"), map_tool("newgidmap")) else {
        return Ok(None);
    };
    let name = user_name(uid);
    let read = |f: &str| fs::read_to_string(f).unwrap_or_default();
    let (Some((ustart, ucount)), Some((gstart, gcount))) = (
        subordinate_range(&read("/etc/subuid"), name.as_deref(), uid),
        subordinate_range(&read("/etc/subgid"), name.as_deref(), gid),
    ) else {
        return Ok(None);
    };
    // The map tools are setuid; under no_new_privs (Kubernetes' allowPrivilegeEscalation:
    // false, Docker's no-new-privileges) they run without it and fail. Said now, by
    // name, rather than as a failed id map.
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer.
    if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1 {
        return Err(SandboxError::IdMap(format!(
            "uid {uid} has subordinate ids, but this process runs with no_new_privs \
             (allowPrivilegeEscalation: false, no-new-privileges), under which the setuid \
             {} cannot map them: remove the user's /etc/subuid and /etc/subgid entries (the \
             code then runs as the user's own id), or allow privilege escalation",
            newuidmap.display()
        )));
    }
    let (k, claim) = claim_index(
        &user_claims_dir(uid)?,
        ucount.min(gcount),
        "subordinate ids",
    )?;
    Ok(Some(SubordinateIds {
        uid: ustart + k,
        gid: gstart + k,
        newuidmap,
        newgidmap,
        _claim: claim,
    }))
}

/// The user's own claims directory: under `/run/user/<uid>` (systemd's, the user's
/// alone), else `/tmp/codebay-<uid>`, which must be the user's and private.
fn user_claims_dir(uid: u32) -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let run = PathBuf::from(format!("/run/user/{uid}"));
    if fs::metadata(&run).is_ok_and(|m| m.is_dir() && m.uid() == uid) {
        return Ok(run.join("codebay/sub-ids"));
    }
    let tmp = PathBuf::from(format!("/tmp/codebay-{uid}"));
    let _ = fs::DirBuilder::new().mode(0o700).create(&tmp);
    let md = fs::symlink_metadata(&tmp)
        .map_err(|e| SandboxError::IdMap(format!("cannot create {}: {e}", tmp.display())))?;
    if !md.is_dir() || md.uid() != uid || md.mode() & 0o077 != 0 {
        return Err(SandboxError::IdMap(format!(
            "{} is not a private directory of uid {uid}: refusing to keep id claims there",
            tmp.display()
        )));
    }
    Ok(tmp.join("sub-ids"))
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

    #[test]
    fn subordinate_ranges_are_found_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:10\nbob:0:0\n";
        assert_eq!(
            subordinate_range(text, Some("alice"), 1000),
            Some((100000, 65536))
        );
        assert_eq!(
            subordinate_range(text, Some("carol"), 1001),
            Some((200000, 10))
        );
        assert_eq!(
            subordinate_range(text, Some("bob"), 7),
            None,
            "an empty range is none"
        );
        assert_eq!(subordinate_range(text, None, 5), None);
    }
}
