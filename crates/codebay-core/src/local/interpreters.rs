//! Where the interpreters really are. `python3` on PATH may be a shim (pyenv) that
//! costs ~50 ms per start and lives under a home directory the sandbox must not
//! show, so the real executable and its prefix are asked of Python itself, once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use codebay_protocol::helper::is_under;
use codebay_protocol::ReadOnlyBind;

#[derive(Debug, Clone, PartialEq)]
pub struct Interpreter {
    /// The executable as the sandbox shows it.
    pub executable: PathBuf,
    /// What to bind read-only so the interpreter finds its libraries, and where.
    pub binds: Vec<ReadOnlyBind>,
    /// What the sandbox's environment needs for it (a moved shared build's libraries).
    pub env: BTreeMap<String, String>,
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
        .map_err(|e| InterpreterError::NotFound("python", not_started(python, &e)))?;
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
    // A virtual environment names its base by host path (pyvenv.cfg's `home`), and
    // `-I` ignores PYTHONHOME: it can only be shown where it is.
    if base != prefix {
        let dir = executable.parent().map(Path::to_path_buf);
        return Ok(Interpreter {
            binds: same_binds(outside_usr(
                [Some(base), Some(prefix), dir]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
            executable,
            env: BTreeMap::new(),
        });
    }
    let mut python = shown_at(executable, &prefix, PYTHON_INSIDE);
    // A shared build finds libpython through a RUNPATH naming the host prefix.
    if python.executable.starts_with(PYTHON_INSIDE) && has_libpython(&prefix.join("lib")) {
        python
            .env
            .insert("LD_LIBRARY_PATH".into(), format!("{PYTHON_INSIDE}/lib"));
    }
    Ok(python)
}

/// Why `program` did not start, in words that name it: a bare name is looked up on
/// PATH, so its absence means it is not installed or not on PATH.
fn not_started(program: &Path, e: &std::io::Error) -> String {
    let shown = program.display();
    let bare = !program.as_os_str().as_encoded_bytes().contains(&b'/');
    match e.kind() {
        std::io::ErrorKind::NotFound if bare => {
            format!("{shown} is not installed or not on PATH")
        }
        std::io::ErrorKind::NotFound => format!("{shown} does not exist"),
        _ => format!("{shown} could not be started: {e}"),
    }
}

/// Where a Python installed outside /usr is shown inside the sandbox.
pub const PYTHON_INSIDE: &str = "/opt/python";
/// Where a Node installed outside /usr (nvm, a tarball) is shown.
pub const NODE_INSIDE: &str = "/opt/node";

/// An interpreter whose installation is `prefix`: shown at `neutral` when it is outside
/// /usr, so neither tracebacks nor `sys.prefix` tell the code how the host is laid out.
fn shown_at(executable: PathBuf, prefix: &Path, neutral: &str) -> Interpreter {
    let host = prefix.to_string_lossy();
    let inside_usr = is_under(&host, ALWAYS_BOUND);
    match executable.strip_prefix(prefix) {
        Ok(rest) if !inside_usr && prefix != Path::new("/") => Interpreter {
            executable: Path::new(neutral).join(rest),
            binds: vec![ReadOnlyBind {
                host: host.into_owned(),
                inside: neutral.into(),
            }],
            env: BTreeMap::new(),
        },
        // Under /usr, or an executable outside its own prefix: shown where it is.
        _ => {
            let dir = executable.parent().map(Path::to_path_buf);
            Interpreter {
                binds: same_binds(outside_usr(
                    [Some(prefix.to_path_buf()), dir]
                        .into_iter()
                        .flatten()
                        .collect(),
                )),
                executable,
                env: BTreeMap::new(),
            }
        }
    }
}

fn has_libpython(lib: &Path) -> bool {
    std::fs::read_dir(lib).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libpython") && name.contains(".so")
        })
    })
}

fn same_binds(paths: Vec<PathBuf>) -> Vec<ReadOnlyBind> {
    paths
        .iter()
        .map(|p| ReadOnlyBind::same(&p.to_string_lossy()))
        .collect()
}

/// Node: the given path, else the first `node` on PATH.
pub fn node(node: Option<&Path>) -> Result<Interpreter, InterpreterError> {
    let executable = match node {
        Some(p) => p.to_path_buf(),
        None => find_on_path("node").ok_or_else(|| {
            InterpreterError::NotFound("node", "node is not installed or not on PATH".into())
        })?,
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
    Ok(shown_at(executable, &prefix, NODE_INSIDE))
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

    #[test]
    fn an_installation_outside_usr_is_shown_at_a_neutral_path() {
        let py = shown_at(
            "/root/.pyenv/versions/3.11.7/bin/python3.11".into(),
            Path::new("/root/.pyenv/versions/3.11.7"),
            PYTHON_INSIDE,
        );
        assert_eq!(py.executable, Path::new("/opt/python/bin/python3.11"));
        assert_eq!(
            py.binds,
            vec![ReadOnlyBind {
                host: "/root/.pyenv/versions/3.11.7".into(),
                inside: "/opt/python".into()
            }]
        );
        let system = shown_at(
            "/usr/bin/python3.11".into(),
            Path::new("/usr"),
            PYTHON_INSIDE,
        );
        assert_eq!(system.executable, Path::new("/usr/bin/python3.11"));
        assert!(system.binds.is_empty());
        let elsewhere = shown_at("/srv/bin/node".into(), Path::new("/opt/x"), NODE_INSIDE);
        assert_eq!(elsewhere.executable, Path::new("/srv/bin/node"));
        assert_eq!(
            elsewhere.binds,
            vec![ReadOnlyBind::same("/opt/x"), ReadOnlyBind::same("/srv/bin")]
        );
    }

    #[test]
    fn a_missing_interpreter_is_named_with_where_it_was_looked_for() {
        let absent = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            not_started(Path::new("python3"), &absent),
            "python3 is not installed or not on PATH"
        );
        assert_eq!(
            not_started(Path::new("/opt/py/bin/python3"), &absent),
            "/opt/py/bin/python3 does not exist"
        );
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(not_started(Path::new("python3"), &denied)
            .starts_with("python3 could not be started: "));
        let err = probe_python(Path::new("codebay-no-such-python3")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no python interpreter found: codebay-no-such-python3 is not installed or not on PATH"
        );
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
