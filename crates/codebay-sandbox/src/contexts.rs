//! A session's contexts as init keeps them: cgroups (the default, see `cgroup.rs`), or
//! process trees where the user opted in to `resourceLimits: 'rlimits'`
//! (`process_contexts.rs`). Init calls one API for both.

use std::collections::BTreeSet;

use crate::cgroup::ContextCgroups;
use crate::process_contexts::ProcessContexts;
use crate::SandboxError;

#[derive(Debug)]
pub enum Contexts {
    Cgroups(ContextCgroups),
    Processes(ProcessContexts),
}

impl Contexts {
    pub fn create(&self, context: &str) -> Result<(), SandboxError> {
        match self {
            Contexts::Cgroups(c) => c.create(context),
            Contexts::Processes(p) => p.create(context),
        }
    }

    /// In init, once the context's first process is forked.
    pub fn started(&self, context: &str, pid: libc::pid_t) {
        if let Contexts::Processes(p) = self {
            p.started(context, pid)
        }
    }

    /// In the forked child, first of all: it never execs if this fails.
    pub fn join(&self, context: &str) -> Result<(), SandboxError> {
        match self {
            Contexts::Cgroups(c) => c.join(context),
            Contexts::Processes(p) => p.join(context),
        }
    }

    pub fn members(
        &self,
        context: &str,
        keep: Option<libc::pid_t>,
    ) -> Result<BTreeSet<libc::pid_t>, SandboxError> {
        match self {
            Contexts::Cgroups(c) => c.members(context, keep),
            Contexts::Processes(p) => p.members(context, keep),
        }
    }

    pub fn kill(&self, context: &str, keep: Option<libc::pid_t>) -> Result<u32, SandboxError> {
        match self {
            Contexts::Cgroups(c) => c.kill(context, keep),
            Contexts::Processes(p) => p.kill(context, keep),
        }
    }

    pub fn remove(&self, context: &str) -> Result<(), SandboxError> {
        match self {
            Contexts::Cgroups(c) => c.remove(context),
            Contexts::Processes(p) => p.remove(context),
        }
    }
}
