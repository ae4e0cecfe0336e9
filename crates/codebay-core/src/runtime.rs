//! The runtime registry: a language is one descriptor on the engine side — its name,
//! aliases, how to start its driver inside the sandbox, its file extensions. The sandbox
//! helper knows no language; it executes the command line a descriptor builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codebay_protocol::helper::RUNTIMES_INSIDE;

use crate::error::{CodebayError, ErrorCode, ErrorKind};

/// How a runtime's driver is started, given the sandbox's view of the interpreters.
pub type DriverCommand = Arc<dyn Fn(&Interpreters) -> Result<Vec<String>, String> + Send + Sync>;

/// The interpreters a session found on the host, by name (`python`, `node`), with the
/// host paths that must be bound read-only for them to run.
#[derive(Debug, Clone, Default)]
pub struct Interpreters {
    pub executables: BTreeMap<&'static str, PathBuf>,
}

impl Interpreters {
    pub fn get(&self, name: &str) -> Result<&Path, String> {
        self.executables
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| format!("no {name} interpreter was found"))
    }
}

/// One language.
#[derive(Clone)]
pub struct Runtime {
    /// The canonical name: what `runCode` sends and contexts report.
    pub name: String,
    /// Other names `runCode` accepts (matched after trim + lower-case).
    pub aliases: Vec<String>,
    /// File extensions the command line maps to this language (without the dot).
    pub extensions: Vec<String>,
    /// The interpreters this runtime needs found on the host (`python`, `node`).
    pub needs: Vec<&'static str>,
    /// The driver's command line inside the sandbox.
    pub command: DriverCommand,
    /// Added to the driver's environment.
    pub env: BTreeMap<String, String>,
    /// Extra host paths the driver needs bound read-only (a driver outside the
    /// package's runtimes directory).
    pub read_only_paths: Vec<PathBuf>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    fn builtin(
        name: &str,
        aliases: &[&str],
        extensions: &[&str],
        interpreter: &'static str,
        args: &'static [&'static str],
        driver: &'static str,
        env: &[(&str, &str)],
    ) -> Runtime {
        Runtime {
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            extensions: extensions.iter().map(|e| e.to_string()).collect(),
            needs: vec![interpreter],
            command: Arc::new(move |found: &Interpreters| {
                let mut argv = vec![found.get(interpreter)?.to_string_lossy().into_owned()];
                argv.extend(args.iter().map(|a| a.to_string()));
                argv.push(format!("{RUNTIMES_INSIDE}/{driver}"));
                Ok(argv)
            }),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            read_only_paths: Vec::new(),
        }
    }

    pub fn python() -> Runtime {
        Runtime::builtin(
            "python",
            &["py", "python3"],
            &["py"],
            "python",
            &["-I", "-u"],
            "python/driver.py",
            &[
                ("PYTHONUNBUFFERED", "1"),
                // matplotlib draws without a display (the Agg backend; the driver makes
                // plt.show() a result), and keeps its caches in /tmp, out of the workspace.
                ("MPLBACKEND", "agg"),
                ("MPLCONFIGDIR", "/tmp/matplotlib"),
            ],
        )
    }

    pub fn javascript() -> Runtime {
        Runtime::builtin(
            "javascript",
            &["js", "node", "nodejs"],
            &["js", "mjs", "cjs"],
            "node",
            &["--expose-internals"],
            "javascript/driver.js",
            &[],
        )
    }
}

/// The languages a session runs, in the order the error message lists them.
#[derive(Debug, Clone)]
pub struct Registry {
    runtimes: Vec<Arc<Runtime>>,
}

impl Default for Registry {
    /// Python and JavaScript.
    fn default() -> Self {
        Registry {
            runtimes: vec![Arc::new(Runtime::python()), Arc::new(Runtime::javascript())],
        }
    }
}

impl Registry {
    pub fn empty() -> Self {
        Registry {
            runtimes: Vec::new(),
        }
    }

    /// Adds (or replaces, by name) a runtime.
    pub fn with(mut self, runtime: Runtime) -> Self {
        self.runtimes.retain(|r| r.name != runtime.name);
        self.runtimes.push(Arc::new(runtime));
        self
    }

    pub fn runtimes(&self) -> &[Arc<Runtime>] {
        &self.runtimes
    }

    /// Matches after trim + lower-case, names and aliases alike.
    pub fn find(&self, given: &str) -> Option<&Arc<Runtime>> {
        let wanted = given.trim().to_lowercase();
        self.runtimes
            .iter()
            .find(|r| r.name == wanted || r.aliases.contains(&wanted))
    }

    /// The canonical name, or the SDK's error (its exact words, with the list of this
    /// registry's languages).
    pub fn resolve(&self, given: &str) -> Result<&Arc<Runtime>, CodebayError> {
        self.find(given).ok_or_else(|| {
            CodebayError::new(
                ErrorCode::UnsupportedLanguage,
                ErrorKind::Error,
                format!(
                    "Unsupported language: {given}. Supported languages are {}",
                    self.names_sentence()
                ),
            )
        })
    }

    pub fn by_extension(&self, extension: &str) -> Option<&Arc<Runtime>> {
        let ext = extension.trim_start_matches('.').to_lowercase();
        self.runtimes.iter().find(|r| r.extensions.contains(&ext))
    }

    /// `'python' and 'javascript'`, `'a', 'b' and 'c'`.
    fn names_sentence(&self) -> String {
        let quoted: Vec<String> = self
            .runtimes
            .iter()
            .map(|r| format!("'{}'", r.name))
            .collect();
        match quoted.as_slice() {
            [] => "none".into(),
            [one] => one.clone(),
            [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_case_map_to_canonical_names() {
        let registry = Registry::default();
        for (given, want) in [
            ("python", "python"),
            ("  PY ", "python"),
            ("Python3", "python"),
            ("javascript", "javascript"),
            ("JS", "javascript"),
            ("node", "javascript"),
            (" NodeJS\n", "javascript"),
        ] {
            assert_eq!(registry.resolve(given).unwrap().name, want, "{given:?}");
        }
    }

    #[test]
    fn unsupported_language_keeps_the_text_as_given() {
        let err = Registry::default().resolve(" Ruby ").unwrap_err();
        assert_eq!(
            err.message,
            "Unsupported language:  Ruby . Supported languages are 'python' and 'javascript'"
        );
        assert_eq!(err.code, ErrorCode::UnsupportedLanguage);
    }

    #[test]
    fn an_added_runtime_extends_the_list() {
        let mut extra = Runtime::python();
        extra.name = "upper".into();
        extra.aliases = vec![];
        let registry = Registry::default().with(extra);
        assert!(registry.resolve("UPPER").is_ok());
        assert!(registry
            .resolve("cobol")
            .unwrap_err()
            .message
            .ends_with("Supported languages are 'python', 'javascript' and 'upper'"));
    }

    #[test]
    fn commands_name_the_interpreter_found() {
        let mut found = Interpreters::default();
        found
            .executables
            .insert("python", "/usr/bin/python3.11".into());
        let argv = (Runtime::python().command)(&found).unwrap();
        assert_eq!(
            argv,
            [
                "/usr/bin/python3.11",
                "-I",
                "-u",
                "/opt/codebay/runtimes/python/driver.py"
            ]
        );
        assert!((Runtime::javascript().command)(&found)
            .unwrap_err()
            .contains("node"));
        assert_eq!(
            Registry::default().by_extension(".PY").unwrap().name,
            "python"
        );
    }
}
