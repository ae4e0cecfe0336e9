//! Where the interpreters really are. `python3` on PATH may be a shim (pyenv) that
//! costs ~50 ms per start and lives under a home directory the sandbox must not
//! show, so the real executable and its prefix are asked of Python itself, once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, PartialEq)]
pub struct Interpreter {
    pub executable: PathBuf,
    /// Directories to bind read-only so the interpreter finds its libraries.
    pub read_only_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpreterError {
    #[error("no {0} interpreter found: {1}")]
    NotFound(&'static str, String),
}

/// Directories the sandbox binds anyway: nothing under them needs its own bind.
const ALWAYS_BOUND: &str = "/usr";

type Probed = Result<Interpreter, InterpreterError>;

/// What each Python path resolved to, asked once per process: a probe starts the
/// interpreter (tens of milliseconds), so it runs on a blocking thread, never on the
/// runtime's I/O worker, and never twice for one path.
fn probed() -> &'static Mutex<HashMap<PathBuf, Probed>> {
    static PROBED: OnceLock<Mutex<HashMap<PathBuf, Probed>>> = OnceLock::new();
    PROBED.get_or_init(Default::default)
}

/// The real Python behind `python` (a path or a name on PATH; default `python3`).
pub async fn python(python: Option<&Path>) -> Probed {
    let python = python.unwrap_or(Path::new("python3")).to_path_buf();
    if let Some(known) = probed().lock().expect("probe cache").get(&python) {
        return known.clone();
    }
    let asked = python.clone();
    let result = tokio::task::spawn_blocking(move || probe_python(&asked))
        .await
        .unwrap_or_else(|e| {
            Err(InterpreterError::NotFound(
                "python",
                format!("the probe failed: {e}"),
            ))
        });
    probed()
        .lock()
        .expect("probe cache")
        .insert(python, result.clone());
    result
}

fn probe_python(python: &Path) -> Result<Interpreter, InterpreterError> {
    let out = std::process::Command::new(python)
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; print(sys.executable); print(sys.base_prefix); print(sys.prefix)",
        ])
        .env_remove("PYTHONHOME")
        .output()
        .map_err(|e| InterpreterError::NotFound("python", format!("{}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(InterpreterError::NotFound(
            "python",
            format!("{} exited with {}", python.display(), out.status),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(PathBuf::from);
    let (Some(executable), Some(base), Some(prefix)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(InterpreterError::NotFound(
            "python",
            "it did not say where it lives".into(),
        ));
    };
    let executable = std::fs::canonicalize(&executable).unwrap_or(executable);
    let mut paths = vec![base, prefix];
    paths.push(
        executable
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    );
    Ok(Interpreter {
        read_only_paths: outside_usr(paths),
        executable,
    })
}

/// Node: the given path, else the first `node` on PATH.
pub fn node(node: Option<&Path>) -> Result<Interpreter, InterpreterError> {
    let executable = match node {
        Some(p) => p.to_path_buf(),
        None => find_on_path("node")
            .ok_or_else(|| InterpreterError::NotFound("node", "no node on PATH".into()))?,
    };
    let executable = std::fs::canonicalize(&executable).map_err(|e| {
        InterpreterError::NotFound("node", format!("{}: {e}", executable.display()))
    })?;
    // A node outside /usr (nvm, a tarball) keeps its libraries beside it: bind its prefix.
    let prefix = executable
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(Interpreter {
        read_only_paths: outside_usr(vec![prefix]),
        executable,
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn outside_usr(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut kept: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.as_os_str().is_empty() || p == Path::new("/") || p.starts_with(ALWAYS_BOUND) {
            continue;
        }
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.retain(|k| !k.starts_with(&p));
            kept.push(p);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_usr_or_nested_are_folded() {
        let got = outside_usr(vec![
            "/usr".into(),
            "/root/.pyenv/versions/3.11.7".into(),
            "/root/.pyenv/versions/3.11.7/bin".into(),
            "/usr/local".into(),
            "".into(),
        ]);
        assert_eq!(got, vec![PathBuf::from("/root/.pyenv/versions/3.11.7")]);
    }

    #[tokio::test]
    async fn the_real_python_is_found_past_any_shim() {
        let py = python(None).await.expect("python3 on PATH");
        assert!(py.executable.is_absolute());
        assert!(
            !py.executable.to_string_lossy().contains("shims"),
            "{:?}",
            py.executable
        );
    }
}
