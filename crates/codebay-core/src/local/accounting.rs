//! Per-context accounting: each interpreter and everything it forks live in a cgroup
//! of their own below the session's, so an out-of-memory kill or a refused fork is
//! reported on the run of the context where it happened, not on whoever is running.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use codebay_protocol::CgroupInfo;

/// One `key N` line of a cgroup events file, kept open: the counters are read around
/// every run, and an open() per read showed up in the warm path's profile.
pub struct EventCounter {
    file: Option<File>,
    key: &'static str,
}

impl EventCounter {
    pub fn open(path: &Path, key: &'static str) -> Self {
        EventCounter {
            file: File::open(path).ok(),
            key,
        }
    }

    /// A missing or unreadable file counts as 0: the limits still hold, only the name
    /// of the failure is lost.
    pub fn read(&self) -> u64 {
        let Some(file) = &self.file else { return 0 };
        let mut buf = [0u8; 512];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        parse_counter(&String::from_utf8_lossy(&buf[..n]), self.key)
    }
}

pub fn parse_counter(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// The counters of one context's cgroup.
pub struct ContextCounters {
    oom_kills: EventCounter,
    refused_forks: EventCounter,
    /// `pids.current`: the processes of the context, zombies included.
    processes: Option<File>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    oom_kills: u64,
    refused_forks: u64,
}

/// What happened in the context between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events {
    /// A process of the context was killed for memory.
    pub memory: bool,
    /// A process of the context was refused a fork at the process limit.
    pub processes: bool,
}

impl ContextCounters {
    /// Without a cgroup (rlimits only) there is nothing to count: a failure then shows
    /// as what the process itself saw (`MemoryError`, `BlockingIOError`).
    pub fn open(cgroup: Option<&CgroupInfo>, context: &str) -> Self {
        let Some(cgroup) = cgroup else {
            return ContextCounters {
                oom_kills: EventCounter {
                    file: None,
                    key: "oom_kill",
                },
                refused_forks: EventCounter {
                    file: None,
                    key: "max",
                },
                processes: None,
            };
        };
        ContextCounters {
            oom_kills: EventCounter::open(&cgroup.memory_events(context), "oom_kill"),
            refused_forks: EventCounter::open(&cgroup.pids_events(context), "max"),
            processes: File::open(cgroup.pids_current(context)).ok(),
        }
    }

    /// How many processes the context holds now, zombies included (they count against
    /// the limit until their parent reaps them); None when it cannot be read.
    pub fn processes(&self) -> Option<u64> {
        let file = self.processes.as_ref()?;
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        String::from_utf8_lossy(&buf[..n]).trim().parse().ok()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            oom_kills: self.oom_kills.read(),
            refused_forks: self.refused_forks.read(),
        }
    }
}

impl Snapshot {
    /// What happened between `before` and this snapshot.
    pub fn since(self, before: Snapshot) -> Events {
        Events {
            memory: self.oom_kills > before.oom_kills,
            processes: self.refused_forks > before.refused_forks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_key_from_the_start_of_the_open_file() {
        let path = std::env::temp_dir().join(format!("codebay-counter-{}", std::process::id()));
        std::fs::write(&path, "oom 3\noom_kill 2\nunder_oom 0\n").unwrap();
        let counter = EventCounter::open(&path, "oom_kill");
        assert_eq!(counter.read(), 2);
        std::fs::write(&path, "oom 3\noom_kill 5\nunder_oom 0\n").unwrap();
        assert_eq!(counter.read(), 5);
        assert_eq!(EventCounter::open(&path, "max").read(), 0);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(EventCounter::open(&path, "oom_kill").read(), 0);
    }
}
