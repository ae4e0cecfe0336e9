//! The session config: the first datagram on the control socket (internals §1).

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::Deserialize;

use crate::SandboxError;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub session_id: String,
    pub memory_bytes: u64,
    pub max_processes: u64,
    #[serde(default)]
    pub cpu_cores: Option<f64>,
    #[serde(default)]
    pub network: bool,
    #[serde(default = "default_fs_bytes")]
    pub workspace_bytes: u64,
    #[serde(default = "default_fs_bytes")]
    pub tmp_bytes: u64,
    #[serde(default)]
    pub read_only_paths: Vec<String>,
    pub runtimes_dir: String,
    #[serde(default)]
    pub python_executable: Option<String>,
    #[serde(default)]
    pub node_executable: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_max_open_files")]
    pub max_open_files: u64,
    #[serde(default = "default_fs_bytes")]
    pub max_file_bytes: u64,
}

fn default_fs_bytes() -> u64 {
    256 * MIB
}
fn default_max_open_files() -> u64 {
    1024
}

/// Inside paths the sandbox builds itself; a read-only bind there would either be
/// hidden by or hide the sandbox's own mounts.
const RESERVED: &[&str] = &["/proc", "/dev", "/etc", "/home", "/tmp", "/opt/codebay"];

pub fn parse(bytes: &[u8]) -> Result<Config, SandboxError> {
    let config: Config = serde_json::from_slice(bytes)
        .map_err(|e| SandboxError::Config(format!("invalid config JSON: {e}")))?;
    validate(&config)?;
    Ok(config)
}

pub fn valid_session_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Absolute, normalised (no `.`/`..`), NUL-free: these strings become mount targets.
pub fn valid_abs_path(p: &str) -> bool {
    let path = Path::new(p);
    !p.contains('\0')
        && path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

pub fn validate(c: &Config) -> Result<(), SandboxError> {
    let bad = |m: String| Err(SandboxError::Config(m));
    if !valid_session_id(&c.session_id) {
        return bad(format!(
            "sessionId {:?} must match [a-z0-9-]{{1,64}}",
            c.session_id
        ));
    }
    if c.memory_bytes < 16 * MIB {
        return bad(format!(
            "memoryBytes {} is below the 16 MiB minimum",
            c.memory_bytes
        ));
    }
    if c.max_processes < 1 {
        return bad("maxProcesses must be at least 1".into());
    }
    if let Some(cores) = c.cpu_cores {
        if !cores.is_finite() || cores <= 0.0 || cores > 1024.0 {
            return bad(format!("cpuCores {cores} must be a positive number"));
        }
    }
    if c.workspace_bytes == 0 || c.tmp_bytes == 0 {
        return bad("workspaceBytes and tmpBytes must be positive".into());
    }
    if c.max_open_files < 16 {
        return bad("maxOpenFiles must be at least 16".into());
    }
    if !valid_abs_path(&c.runtimes_dir) {
        return bad(format!(
            "runtimesDir {:?} must be an absolute normalised path",
            c.runtimes_dir
        ));
    }
    for p in &c.read_only_paths {
        if !valid_abs_path(p) || p == "/" {
            return bad(format!(
                "readOnlyPaths entry {p:?} must be an absolute normalised path other than /"
            ));
        }
        if let Some(r) = RESERVED.iter().find(|r| under(p, r)) {
            return bad(format!(
                "readOnlyPaths entry {p:?} is inside {r}, which the sandbox builds itself"
            ));
        }
    }
    for exe in [&c.python_executable, &c.node_executable]
        .into_iter()
        .flatten()
    {
        if !valid_abs_path(exe) {
            return bad(format!(
                "executable {exe:?} must be an absolute normalised path"
            ));
        }
    }
    for (k, v) in &c.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return bad(format!(
                "env entry {k:?} is not a valid environment variable"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "sessionId": "cb-1a2b3c", "memoryBytes": 536870912u64, "maxProcesses": 64,
            "cpuCores": null, "network": false, "workspaceBytes": 268435456u64,
            "tmpBytes": 268435456u64, "readOnlyPaths": ["/root/.pyenv/versions/3.11.7"],
            "runtimesDir": "/abs/runtimes", "pythonExecutable": "/usr/bin/python3",
            "nodeExecutable": "/usr/bin/node", "env": {"FOO": "bar"},
            "maxOpenFiles": 1024, "maxFileBytes": 268435456u64
        })
    }

    fn parse_v(v: &serde_json::Value) -> Result<Config, SandboxError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse_v(&base()).unwrap();
        assert_eq!(c.session_id, "cb-1a2b3c");
        assert_eq!(c.env["FOO"], "bar");
        assert!(c.cpu_cores.is_none());
    }

    #[test]
    fn rejects_bad_session_ids() {
        for id in ["", "CB", "a/b", "../x", "a b", &"x".repeat(65), "é"] {
            let mut v = base();
            v["sessionId"] = id.into();
            let e = parse_v(&v).unwrap_err();
            assert_eq!(e.step(), "config", "{id}");
        }
    }

    #[test]
    fn rejects_bad_paths_and_env() {
        for (k, val) in [
            ("runtimesDir", serde_json::json!("rel/path")),
            ("runtimesDir", serde_json::json!("/a/../b")),
            ("readOnlyPaths", serde_json::json!(["/"])),
            ("readOnlyPaths", serde_json::json!(["/etc"])),
            ("readOnlyPaths", serde_json::json!(["/proc/1"])),
            ("env", serde_json::json!({"A=B": "x"})),
            ("cpuCores", serde_json::json!(-1.0)),
            ("memoryBytes", serde_json::json!(1)),
        ] {
            let mut v = base();
            v[k] = val.clone();
            assert!(parse_v(&v).is_err(), "{k} = {val}");
        }
        assert!(parse(b"not json").is_err());
    }
}
