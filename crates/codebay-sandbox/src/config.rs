//! The session config: the first datagram on the control socket, a
//! [`SandboxConfig`] of the protocol crate. The engine validated it before sending; the
//! helper checks it again because every field becomes a mount, a limit or a path here.

use std::collections::BTreeMap;

use codebay_protocol::helper::{
    is_under, valid_abs_path, valid_name, HOME, MIN_MEMORY_BYTES, MIN_OPEN_FILES, MIN_PROCESSES,
    RUNTIMES_INSIDE, WRITABLE_ROOTS,
};
use codebay_protocol::SandboxConfig;

use crate::SandboxError;

/// Inside paths the sandbox builds itself (besides [`HOME`], [`RUNTIMES_INSIDE`] and the
/// [`WRITABLE_ROOTS`]): a read-only bind in one would be hidden by the sandbox's own
/// mount, and one above it would hide that mount.
const BUILT: [&str; 4] = ["/proc", "/dev", "/etc", "/opt/codebay"];

fn reserved() -> impl Iterator<Item = &'static str> {
    BUILT
        .into_iter()
        .chain([HOME, RUNTIMES_INSIDE])
        .chain(WRITABLE_ROOTS)
}

pub fn parse(bytes: &[u8]) -> Result<SandboxConfig, SandboxError> {
    let config: SandboxConfig = serde_json::from_slice(bytes)
        .map_err(|e| SandboxError::Config(format!("invalid config JSON: {e}")))?;
    validate(&config)?;
    Ok(config)
}

/// An environment a process may be given: names without `=`, nothing with a NUL.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!(
                "env entry {k:?} is not a valid environment variable"
            ));
        }
    }
    Ok(())
}

pub fn validate(c: &SandboxConfig) -> Result<(), SandboxError> {
    let bad = |m: String| Err(SandboxError::Config(m));
    if !valid_name(&c.session_id) {
        return bad(format!(
            "sessionId {:?} must match [a-z0-9-]{{1,64}}",
            c.session_id
        ));
    }
    if c.memory_bytes < MIN_MEMORY_BYTES {
        return bad(format!(
            "memoryBytes {} is below the minimum of {MIN_MEMORY_BYTES}",
            c.memory_bytes
        ));
    }
    if c.max_processes < MIN_PROCESSES {
        return bad(format!(
            "maxProcesses {} is below the minimum of {MIN_PROCESSES}",
            c.max_processes
        ));
    }
    if let Some(cores) = c.cpu_cores {
        if !cores.is_finite() || cores <= 0.0 || cores > 1024.0 {
            return bad(format!("cpuCores {cores} must be a positive number"));
        }
    }
    if c.workspace_bytes == 0 || c.tmp_bytes == 0 || c.max_file_bytes == 0 {
        return bad("workspaceBytes, tmpBytes and maxFileBytes must be positive".into());
    }
    if c.max_open_files < MIN_OPEN_FILES {
        return bad(format!(
            "maxOpenFiles {} is below the minimum of {MIN_OPEN_FILES}",
            c.max_open_files
        ));
    }
    if !valid_abs_path(&c.runtimes_dir) {
        return bad(format!(
            "runtimesDir {:?} must be an absolute normalised path",
            c.runtimes_dir
        ));
    }
    for (i, b) in c.read_only_binds.iter().enumerate() {
        for p in [&b.host, &b.inside] {
            if !valid_abs_path(p) || p == "/" {
                return bad(format!(
                    "readOnlyBinds entry {p:?} must be an absolute normalised path other than /"
                ));
            }
        }
        let p = &b.inside;
        if let Some(r) = reserved().find(|r| is_under(p, r) || is_under(r, p)) {
            return bad(format!(
                "readOnlyBinds entry {p:?} overlaps {r}, which the sandbox builds itself"
            ));
        }
        // /usr is bound whole and read-only: nothing can be mounted inside it.
        if is_under(p, "/usr") && b.host != b.inside {
            return bad(format!(
                "readOnlyBinds entry {p:?} is under /usr, where only the host's own files are"
            ));
        }
        if let Some(o) = c.read_only_binds[..i]
            .iter()
            .find(|o| is_under(p, &o.inside) || is_under(&o.inside, p))
        {
            return bad(format!(
                "readOnlyBinds entries {:?} and {p:?} nest",
                o.inside
            ));
        }
    }
    validate_env(&c.env).map_err(SandboxError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "sessionId": "cb-1a2b3c", "memoryBytes": 536870912u64, "maxProcesses": 64,
            "cpuCores": null, "network": false, "workspaceBytes": 268435456u64,
            "tmpBytes": 268435456u64,
            "readOnlyBinds": [{"host": "/root/.pyenv/versions/3.11.7", "inside": "/opt/python"}],
            "runtimesDir": "/abs/runtimes", "env": {"FOO": "bar"},
            "maxOpenFiles": 1024, "maxFileBytes": 268435456u64
        })
    }

    fn binds(pairs: &[(&str, &str)]) -> serde_json::Value {
        serde_json::json!(pairs
            .iter()
            .map(|(host, inside)| serde_json::json!({"host": host, "inside": inside}))
            .collect::<Vec<_>>())
    }

    fn parse_v(v: &serde_json::Value) -> Result<SandboxConfig, SandboxError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn the_protocol_fixtures_are_valid_configs() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../codebay-protocol/tests/fixtures/helper.jsonl"
        );
        let mut seen = 0;
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["kind"] == "config" {
                parse_v(&v["message"]).unwrap_or_else(|e| panic!("{line}: {e}"));
                seen += 1;
            }
        }
        assert!(seen >= 2);
    }

    #[test]
    fn parses_the_documented_example() {
        let c = parse_v(&base()).unwrap();
        assert_eq!(c.session_id, "cb-1a2b3c");
        assert_eq!(c.env["FOO"], "bar");
        assert!(c.cpu_cores.is_none());
    }

    #[test]
    fn every_field_is_required_and_no_other_is_accepted() {
        for field in base().as_object().unwrap().keys() {
            if field == "cpuCores" {
                continue; // an Option: absent reads as null
            }
            let mut v = base();
            v.as_object_mut().unwrap().remove(field);
            assert_eq!(parse_v(&v).unwrap_err().step(), "config", "without {field}");
        }
        let mut v = base();
        v["pythonExecutable"] = "/usr/bin/python3".into();
        assert_eq!(parse_v(&v).unwrap_err().step(), "config");
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
    fn rejects_bad_paths_limits_and_env() {
        for (k, val) in [
            ("runtimesDir", serde_json::json!("rel/path")),
            ("runtimesDir", serde_json::json!("/a/../b")),
            ("readOnlyBinds", binds(&[("/x", "/")])),
            ("readOnlyBinds", binds(&[("/", "/x")])),
            ("readOnlyBinds", binds(&[("/x", "/etc")])),
            ("readOnlyBinds", binds(&[("/x", "/proc/1")])),
            ("readOnlyBinds", binds(&[("/x", "/home/user/x")])),
            ("readOnlyBinds", binds(&[("/x", "/home")])),
            // Above a mount of the sandbox: it would hide the runtimes.
            ("readOnlyBinds", binds(&[("/x", "/opt")])),
            ("readOnlyBinds", binds(&[("/usr//lib", "/usr//lib")])),
            ("readOnlyBinds", binds(&[("/x", "/usr/lib/x")])),
            (
                "readOnlyBinds",
                binds(&[("/x", "/opt/a"), ("/y", "/opt/a/b")]),
            ),
            ("env", serde_json::json!({"A=B": "x"})),
            ("env", serde_json::json!({"": "x"})),
            ("cpuCores", serde_json::json!(-1.0)),
            ("cpuCores", serde_json::json!(0.0)),
            ("memoryBytes", serde_json::json!(MIN_MEMORY_BYTES - 1)),
            ("maxProcesses", serde_json::json!(MIN_PROCESSES - 1)),
            ("maxOpenFiles", serde_json::json!(MIN_OPEN_FILES - 1)),
            ("maxFileBytes", serde_json::json!(0)),
        ] {
            let mut v = base();
            v[k] = val.clone();
            let e = parse_v(&v).expect_err(&format!("{k} = {val}"));
            assert_eq!(e.step(), "config");
        }
        let mut v = base();
        v["memoryBytes"] = MIN_MEMORY_BYTES.into();
        v["maxProcesses"] = MIN_PROCESSES.into();
        v["maxOpenFiles"] = MIN_OPEN_FILES.into();
        v["readOnlyBinds"] = binds(&[
            ("/opt/other", "/opt/other"),
            ("/usr/lib/python3", "/usr/lib/python3"),
            ("/root/.pyenv/versions/3.11.7", "/opt/python"),
        ]);
        parse_v(&v).unwrap();
        assert!(parse(b"not json").is_err());
    }
}
