//! Contexts without cgroups (`resourceLimits: 'rlimits'`, an explicit opt-in where no
//! cgroup can be had): a context is its first process and everything below it. The
//! first process is made a child subreaper before it execs (the attribute survives
//! exec), so what its descendants orphan is reparented to it, not to init: while it
//! lives, every process of the context descends from it, whatever sessions or process
//! groups they made. What it leaves behind when it exits itself goes to init, belongs
//! to no context any more, and ends with the session (its pid namespace).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::{sys, SandboxError};

/// Rounds of SIGKILL, as for cgroups: each rereads the tree after a 1 ms pause.
const KILL_ROUNDS: usize = 200;

#[derive(Debug, Default)]
pub struct ProcessContexts {
    /// Each context's first process, once forked.
    roots: RefCell<BTreeMap<String, Option<libc::pid_t>>>,
}

fn err(message: String) -> SandboxError {
    SandboxError::Spawn(message)
}

impl ProcessContexts {
    pub fn create(&self, context: &str) -> Result<(), SandboxError> {
        let mut roots = self.roots.borrow_mut();
        if roots.contains_key(context) {
            return Err(err(format!("the context exists already: {context}")));
        }
        roots.insert(context.to_owned(), None);
        Ok(())
    }

    /// Records the context's first process (in init, after the fork).
    pub fn started(&self, context: &str, pid: libc::pid_t) {
        if let Some(root) = self.roots.borrow_mut().get_mut(context) {
            *root = Some(pid);
        }
    }

    /// In the forked child, before exec: orphans below it come back to it.
    pub fn join(&self, _context: &str) -> Result<(), SandboxError> {
        // SAFETY: integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            return Err(err(format!(
                "cannot make the context's first process a subreaper: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    fn root(&self, context: &str) -> Option<libc::pid_t> {
        self.roots.borrow().get(context).copied().flatten()
    }

    /// The context's processes (its first and every descendant) but `keep` and init.
    pub fn members(
        &self,
        context: &str,
        keep: Option<libc::pid_t>,
    ) -> Result<BTreeSet<libc::pid_t>, SandboxError> {
        let Some(root) = self.root(context) else {
            return Ok(BTreeSet::new());
        };
        let parents = process_parents()?;
        Ok(descendants(root, &parents)
            .into_iter()
            .filter(|p| *p > 1 && Some(*p) != keep)
            .collect())
    }

    /// SIGKILLs the context's processes but `keep`: the descendants first, while the
    /// first process still holds its orphans, then the first process itself.
    pub fn kill(&self, context: &str, keep: Option<libc::pid_t>) -> Result<u32, SandboxError> {
        let Some(root) = self.root(context) else {
            return Ok(0);
        };
        let mut signalled = BTreeSet::new();
        for _ in 0..KILL_ROUNDS {
            let below: Vec<libc::pid_t> = self
                .members(context, keep)?
                .into_iter()
                .filter(|p| *p != root)
                .collect();
            if below.is_empty() {
                break;
            }
            sys::kill_pinned(&below, &mut signalled, || self.members(context, keep))?;
            std::thread::sleep(Duration::from_millis(1));
        }
        if keep != Some(root) && sys::pidfd_open(root).is_ok() {
            sys::kill_pinned(&[root], &mut signalled, || self.members(context, keep))?;
            // Init ignores SIGCHLD, so the kernel reaps it; wait until it is gone.
            for _ in 0..2000 {
                if !std::path::Path::new(&format!("/proc/{root}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(signalled.len() as u32)
    }

    pub fn remove(&self, context: &str) -> Result<(), SandboxError> {
        self.roots.borrow_mut().remove(context);
        Ok(())
    }
}

/// Every process of this pid namespace with its parent, from /proc.
fn process_parents() -> Result<BTreeMap<libc::pid_t, libc::pid_t>, SandboxError> {
    let dir = std::fs::read_dir("/proc").map_err(|e| err(format!("cannot list /proc: {e}")))?;
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_of(&stat)?))
        })
        .collect())
}

/// The ppid field of a `/proc/<pid>/stat` line (after the parenthesised name, which
/// may itself hold spaces and parentheses).
pub fn parent_of(stat: &str) -> Option<libc::pid_t> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every process below it.
pub fn descendants(
    root: libc::pid_t,
    parents: &BTreeMap<libc::pid_t, libc::pid_t>,
) -> BTreeSet<libc::pid_t> {
    let mut children: BTreeMap<libc::pid_t, Vec<libc::pid_t>> = BTreeMap::new();
    for (&pid, &ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if parents.contains_key(&p) && out.insert(p) {
            stack.extend(children.get(&p).into_iter().flatten());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_name_with_spaces_and_parentheses() {
        assert_eq!(parent_of("42 (a b) c) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn descendants_are_the_whole_subtree_and_nothing_else() {
        let parents: BTreeMap<_, _> = [
            (1, 0),
            (10, 1),
            (11, 10),
            (12, 11),
            (13, 10),
            (20, 1),
            (21, 20),
        ]
        .into();
        assert_eq!(descendants(10, &parents), [10, 11, 12, 13].into());
        assert_eq!(descendants(20, &parents), [20, 21].into());
        assert_eq!(
            descendants(99, &parents),
            BTreeSet::new(),
            "a gone root has none"
        );
    }
}
