//! `LocalSession.create()` options, validated once, here, under the names users write.
//! A wrong type is a `TypeError`, a value out of range or not whole a `RangeError`, an
//! unknown key is refused naming the nearest known one; all carry
//! `ERR_CODEBAY_INVALID_OPTION`. Nothing reaches the helper before it passed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use codebay_protocol::helper::{normalise_cgroup_parent, MIN_MEMORY_BYTES, MIN_PROCESSES};
use codebay_protocol::ResourceLimits;
use serde_json::{Map, Value};

pub use codebay_protocol::tool::json_kind;

use crate::error::{CodebayError, ErrorCode, ErrorKind};
use crate::request::check_env;
use crate::runtime::Registry;

pub const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The kernel's own ceiling on pids (PID_MAX_LIMIT).
const MAX_PROCESSES: u64 = 4_194_304;
/// The largest whole number a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// The most sandboxes kept ready for one option set: each idles at ~15 MiB.
pub const MAX_POOL_SIZE: usize = 16;

/// The options a user gives, with their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    pub memory_bytes: u64,
    pub max_processes: u64,
    /// None: all cores.
    pub cpu_cores: Option<f64>,
    /// Off by default: the sandbox gets an empty network namespace.
    pub network: bool,
    pub env: BTreeMap<String, String>,
    pub workspace_bytes: u64,
    pub tmp_bytes: u64,
    /// Output kept per stream, per run.
    pub output_limit_bytes: u64,
    /// A python3 to resolve (default: `python3` on PATH, past any shim).
    pub python: Option<PathBuf>,
    /// Code contexts made with `createCodeContext` at once.
    pub max_contexts: usize,
    pub pool: PoolOptions,
    /// The cgroup to make the session's cgroups under (`cgroupParent`, else
    /// `CODEBAY_CGROUP_PARENT` when the session is built).
    pub cgroup_parent: Option<String>,
    /// `rlimits` only when asked for: never a fallback.
    pub resource_limits: ResourceLimits,
}

/// How many sessions to keep built ahead, and which interpreters to start in them.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolOptions {
    /// 0 disables the pool: every `create()` builds its own sandbox.
    pub size: usize,
    /// Canonical language names. Holds every language of `preload` too.
    pub prewarm: Vec<String>,
    /// Modules imported in each language's default interpreter before the session is
    /// handed out, by canonical language name, in the order given (duplicates dropped).
    pub preload: BTreeMap<String, Vec<String>>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            memory_bytes: 512 * MIB,
            max_processes: 64,
            cpu_cores: None,
            network: false,
            env: BTreeMap::new(),
            // As large as the processes' memory; the session's memory limit holds both
            // (SandboxConfig::memory_limit_bytes).
            workspace_bytes: 512 * MIB,
            tmp_bytes: 256 * MIB,
            output_limit_bytes: 10 * MIB,
            python: None,
            max_contexts: 16,
            pool: PoolOptions {
                size: 2,
                prewarm: vec!["python".into()],
                preload: BTreeMap::new(),
            },
            cgroup_parent: None,
            resource_limits: ResourceLimits::Cgroup,
        }
    }
}

/// Every option, as users spell it.
pub const OPTION_NAMES: [&str; 15] = [
    "memoryBytes",
    "maxProcesses",
    "cpuCores",
    "network",
    "env",
    "workspaceBytes",
    "tmpBytes",
    "outputLimitBytes",
    "python",
    "maxContexts",
    "poolSize",
    "prewarm",
    "preload",
    "cgroupParent",
    "resourceLimits",
];

/// The languages whose modules `preload` can import. JavaScript is not one: a fresh
/// sandbox holds no `node_modules`, so all `require` could load are Node's built-ins,
/// which are loaded already.
pub const PRELOAD_LANGUAGES: [&str; 1] = ["python"];

impl SessionOptions {
    /// The memory cgroup limit a session with these options gets (its processes'
    /// `memoryBytes` plus the room its files may take).
    pub fn memory_limit_bytes(&self) -> u64 {
        codebay_protocol::helper::memory_limit_bytes(
            self.memory_bytes,
            self.workspace_bytes,
            self.tmp_bytes,
        )
    }

    /// Reads `create()`'s argument: `undefined`/`null` (as JSON null) or an object.
    /// A key set to `undefined`/`null` takes its default.
    pub fn from_json(value: &Value, registry: &Registry) -> Result<SessionOptions, CodebayError> {
        let map = match value {
            Value::Null => return Ok(SessionOptions::default()),
            Value::Object(map) => map,
            other => {
                return Err(type_error(format!(
                    "LocalSession.create takes an options object, got {}",
                    json_kind(other)
                )))
            }
        };
        check_keys("LocalSession.create", map, &OPTION_NAMES)?;
        let mut o = SessionOptions::default();
        let given = |key: &str| map.get(key).filter(|v| !v.is_null());
        if let Some(v) = given("memoryBytes") {
            o.memory_bytes = whole("memoryBytes", v, MIN_MEMORY_BYTES, MAX_SAFE_INTEGER)?;
        }
        if let Some(v) = given("maxProcesses") {
            o.max_processes = whole("maxProcesses", v, MIN_PROCESSES, MAX_PROCESSES)?;
        }
        if let Some(v) = given("cpuCores") {
            let cores = number("cpuCores", v)?;
            if !(cores.is_finite() && (0.01..=1024.0).contains(&cores)) {
                return Err(range_error(format!(
                    "cpuCores must be a number from 0.01 to 1024, got {cores}"
                )));
            }
            o.cpu_cores = Some(cores);
        }
        if let Some(v) = given("network") {
            o.network = v
                .as_bool()
                .ok_or_else(|| wrong_type("network", "a boolean", v))?;
        }
        if let Some(v) = given("env") {
            o.env = string_map("env", v)?;
        }
        if let Some(v) = given("workspaceBytes") {
            o.workspace_bytes = whole("workspaceBytes", v, MIB, MAX_SAFE_INTEGER)?;
        }
        if let Some(v) = given("tmpBytes") {
            o.tmp_bytes = whole("tmpBytes", v, MIB, MAX_SAFE_INTEGER)?;
        }
        if let Some(v) = given("outputLimitBytes") {
            o.output_limit_bytes = whole("outputLimitBytes", v, 1, GIB)?;
        }
        if let Some(v) = given("python") {
            match v.as_str() {
                Some(p) if !p.is_empty() && !p.contains('\0') => o.python = Some(p.into()),
                Some(_) => {
                    return Err(range_error(
                        "python must be a path or a command name, got an empty string".into(),
                    ))
                }
                None => return Err(wrong_type("python", "a string", v)),
            }
        }
        if let Some(v) = given("maxContexts") {
            o.max_contexts = whole("maxContexts", v, 1, 256)? as usize;
        }
        if let Some(v) = given("poolSize") {
            o.pool.size = whole("poolSize", v, 0, MAX_POOL_SIZE as u64)? as usize;
        }
        if let Some(v) = given("prewarm") {
            let Value::Array(items) = v else {
                return Err(wrong_type("prewarm", "an array of language names", v));
            };
            o.pool.prewarm = items
                .iter()
                .map(|item| {
                    let name = item
                        .as_str()
                        .ok_or_else(|| wrong_type("prewarm", "an array of language names", item))?;
                    registry.resolve(name).map(|r| r.name.clone()).map_err(|e| {
                        CodebayError::new(
                            ErrorCode::InvalidOption,
                            ErrorKind::RangeError,
                            format!("prewarm: {}", e.message),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = given("preload") {
            o.pool.preload = preload(v, registry)?;
        }
        if let Some(v) = given("cgroupParent") {
            o.cgroup_parent = Some(cgroup_parent(v)?);
        }
        if let Some(v) = given("resourceLimits") {
            o.resource_limits = match v.as_str() {
                Some("cgroup") => ResourceLimits::Cgroup,
                Some("rlimits") => ResourceLimits::Rlimits,
                Some(other) => {
                    return Err(range_error(format!(
                        "resourceLimits must be 'cgroup' or 'rlimits', got {other:?}"
                    )))
                }
                None => return Err(wrong_type("resourceLimits", "'cgroup' or 'rlimits'", v)),
            };
        }
        // A module is imported in the default interpreter, so that interpreter is
        // started ahead too.
        for language in o.pool.preload.keys() {
            if !o.pool.prewarm.contains(language) {
                o.pool.prewarm.push(language.clone());
            }
        }
        Ok(o)
    }
}

/// `cgroupParent`: a cgroup path from each hierarchy's root (`/codebay-alice`).
pub fn cgroup_parent(v: &Value) -> Result<String, CodebayError> {
    let Some(path) = v.as_str() else {
        return Err(wrong_type(
            "cgroupParent",
            "a cgroup path such as '/codebay-alice'",
            v,
        ));
    };
    normalise_cgroup_parent(path).map_err(|why| range_error(format!("cgroupParent must be {why}")))
}

/// `preload`: `{ python: ['pandas', 'matplotlib.pyplot'] }`, language names or aliases
/// as keys.
fn preload(v: &Value, registry: &Registry) -> Result<BTreeMap<String, Vec<String>>, CodebayError> {
    const SHAPE: &str = "an object of module names by language, e.g. { python: ['pandas'] }";
    let Value::Object(map) = v else {
        return Err(wrong_type("preload", SHAPE, v));
    };
    let mut preload: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, names) in map {
        let language = registry
            .resolve(key)
            .map(|r| r.name.clone())
            .map_err(|e| range_error(format!("preload: {}", e.message)))?;
        if !PRELOAD_LANGUAGES.contains(&language.as_str()) {
            return Err(range_error(format!(
                "preload.{key}: only {} modules can be preloaded (a fresh sandbox has no node_modules; Node's built-in modules are loaded already)",
                PRELOAD_LANGUAGES.join(", ")
            )));
        }
        let items = match names {
            Value::Null => continue,
            Value::Array(items) => items,
            other => {
                return Err(wrong_type(
                    &format!("preload.{key}"),
                    "an array of module names",
                    other,
                ))
            }
        };
        let modules = preload.entry(language).or_default();
        for item in items {
            let name = item.as_str().ok_or_else(|| {
                wrong_type(&format!("preload.{key}"), "an array of module names", item)
            })?;
            if !is_module_name(name) {
                return Err(range_error(format!(
                    "preload.{key}: {name:?} is not a module name (names separated by dots, as in 'matplotlib.pyplot')"
                )));
            }
            if !modules.iter().any(|m| m == name) {
                modules.push(name.to_owned());
            }
        }
    }
    preload.retain(|_, modules| !modules.is_empty());
    Ok(preload)
}

/// A dotted Python module name: identifiers (letters, digits, `_`, not starting with a
/// digit) separated by single dots; no relative import.
pub fn is_module_name(name: &str) -> bool {
    name.len() <= 512
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
                && chars.all(|c| c == '_' || c.is_alphanumeric())
        })
}

/// Refuses keys that are not options, naming the nearest one.
pub fn check_keys(
    what: &str,
    map: &Map<String, Value>,
    known: &[&str],
) -> Result<(), CodebayError> {
    for key in map.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let nearest = known
            .iter()
            .map(|k| (distance(&key.to_lowercase(), &k.to_lowercase()), *k))
            .min()
            .filter(|(d, k)| *d <= (k.len() / 3).max(2));
        let hint = match nearest {
            Some((_, k)) => format!(" Did you mean '{k}'?"),
            None => format!(" The options are: {}.", known.join(", ")),
        };
        return Err(type_error(format!("{what}: unknown option '{key}'.{hint}")));
    }
    Ok(())
}

/// Levenshtein distance: typos are one or two edits away.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

fn number(name: &str, v: &Value) -> Result<f64, CodebayError> {
    v.as_f64().ok_or_else(|| wrong_type(name, "a number", v))
}

/// A whole number in `min..=max`.
fn whole(name: &str, v: &Value, min: u64, max: u64) -> Result<u64, CodebayError> {
    let n = number(name, v)?;
    if !n.is_finite() || n.fract() != 0.0 || n < min as f64 || n > max as f64 {
        // Sizes are easier to read in MiB too; counts are not sizes.
        let shown = |b: u64| {
            if name.ends_with("Bytes") {
                readable(b)
            } else {
                b.to_string()
            }
        };
        return Err(range_error(format!(
            "{name} must be a whole number from {} to {}, got {n}",
            shown(min),
            shown(max)
        )));
    }
    Ok(n as u64)
}

/// An object whose values are all strings, as environment variables.
pub fn string_map(name: &str, v: &Value) -> Result<BTreeMap<String, String>, CodebayError> {
    let Value::Object(map) = v else {
        return Err(wrong_type(name, "an object of strings", v));
    };
    let env = map
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(type_error(format!(
                "{name}.{k} must be a string, got {}",
                json_kind(other)
            ))),
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    check_env(name, &env)?;
    Ok(env)
}

fn readable(n: u64) -> String {
    match n {
        n if n >= MIB && n % MIB == 0 => format!("{n} ({} MiB)", n / MIB),
        n => n.to_string(),
    }
}

fn wrong_type(name: &str, want: &str, got: &Value) -> CodebayError {
    type_error(format!("{name} must be {want}, got {}", json_kind(got)))
}

/// An option of the wrong type (`ERR_CODEBAY_INVALID_OPTION`, a `TypeError`).
pub fn type_error(message: String) -> CodebayError {
    CodebayError::new(ErrorCode::InvalidOption, ErrorKind::TypeError, message)
}

/// An option out of range (`ERR_CODEBAY_INVALID_OPTION`, a `RangeError`).
pub fn range_error(message: String) -> CodebayError {
    CodebayError::new(ErrorCode::InvalidOption, ErrorKind::RangeError, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<SessionOptions, CodebayError> {
        SessionOptions::from_json(&v, &Registry::default())
    }

    #[test]
    fn defaults_and_nulls() {
        assert_eq!(parse(Value::Null).unwrap(), SessionOptions::default());
        assert_eq!(
            parse(json!({"memoryBytes": null})).unwrap(),
            SessionOptions::default()
        );
        let d = SessionOptions::default();
        assert_eq!(d.workspace_bytes, d.memory_bytes);
    }

    #[test]
    fn values_are_read_under_their_public_names() {
        let o = parse(
            json!({"memoryBytes": 64 * MIB, "maxProcesses": 8, "cpuCores": 0.5, "network": true,
            "env": {"A": "1"}, "workspaceBytes": 2 * MIB, "tmpBytes": MIB, "outputLimitBytes": 100,
            "python": "/usr/bin/python3", "maxContexts": 3, "poolSize": 0, "prewarm": ["JS"]}),
        )
        .unwrap();
        assert_eq!(
            (o.memory_bytes, o.max_processes, o.cpu_cores, o.network),
            (64 * MIB, 8, Some(0.5), true)
        );
        assert_eq!(
            (o.output_limit_bytes, o.max_contexts, o.pool.size),
            (100, 3, 0)
        );
        assert_eq!(o.pool.prewarm, vec!["javascript"]);
    }

    #[test]
    fn each_rule_has_its_error_class() {
        for (options, kind) in [
            (json!(5), ErrorKind::TypeError),
            (json!({"memoryBytes": "1"}), ErrorKind::TypeError),
            (json!({"memoryBytes": 16 * MIB}), ErrorKind::RangeError),
            (json!({"memoryBytes": 67108864.5}), ErrorKind::RangeError),
            (
                json!({"maxProcesses": 4294967301u64}),
                ErrorKind::RangeError,
            ),
            (json!({"maxProcesses": 3}), ErrorKind::RangeError),
            (json!({"cpuCores": 0}), ErrorKind::RangeError),
            (json!({"network": 1}), ErrorKind::TypeError),
            (json!({"env": "A=1"}), ErrorKind::TypeError),
            (json!({"env": {"A": 1}}), ErrorKind::TypeError),
            (json!({"env": {"A=B": "1"}}), ErrorKind::TypeError),
            (json!({"poolSize": 17}), ErrorKind::RangeError),
            (json!({"prewarm": ["ruby"]}), ErrorKind::RangeError),
            (json!({"prewarm": "python"}), ErrorKind::TypeError),
            (json!({"maxContexts": 0}), ErrorKind::RangeError),
            (json!({"memoryByte": MIB}), ErrorKind::TypeError),
            (json!({"preload": ["pandas"]}), ErrorKind::TypeError),
            (json!({"preload": "pandas"}), ErrorKind::TypeError),
            (
                json!({"preload": {"python": "pandas"}}),
                ErrorKind::TypeError,
            ),
            (json!({"preload": {"python": [1]}}), ErrorKind::TypeError),
            (json!({"preload": {"ruby": ["x"]}}), ErrorKind::RangeError),
            (
                json!({"preload": {"javascript": ["fs"]}}),
                ErrorKind::RangeError,
            ),
            (
                json!({"preload": {"python": [".relative"]}}),
                ErrorKind::RangeError,
            ),
            (
                json!({"preload": {"python": ["os; import x"]}}),
                ErrorKind::RangeError,
            ),
        ] {
            let err = parse(options.clone()).unwrap_err();
            assert_eq!(
                (err.kind, err.code),
                (kind, ErrorCode::InvalidOption),
                "{options}: {}",
                err.message
            );
        }
    }

    #[test]
    fn preload_is_read_by_language_and_implies_prewarm() {
        let o = parse(json!({"prewarm": [], "preload": {"PY": ["pandas", "matplotlib.pyplot", "pandas"], "python3": ["json"]}})).unwrap();
        assert_eq!(
            o.pool.preload,
            BTreeMap::from([(
                "python".to_string(),
                vec![
                    "pandas".to_string(),
                    "matplotlib.pyplot".into(),
                    "json".into()
                ]
            )])
        );
        assert_eq!(o.pool.prewarm, vec!["python"]);
        // Given to prewarm already: not twice.
        let o = parse(json!({"preload": {"python": ["json"]}})).unwrap();
        assert_eq!(o.pool.prewarm, vec!["python"]);
        // No modules: nothing to preload, nothing implied.
        let o = parse(json!({"prewarm": [], "preload": {"python": [], "py": null}})).unwrap();
        assert!(o.pool.preload.is_empty() && o.pool.prewarm.is_empty());
        // Part of the options, so of the pool's key.
        assert_ne!(
            parse(json!({"preload": {"python": ["json"]}})).unwrap(),
            SessionOptions::default()
        );
        let err = parse(json!({"preload": {"python": ["1x"]}})).unwrap_err();
        assert_eq!(
            err.message,
            "preload.python: \"1x\" is not a module name (names separated by dots, as in 'matplotlib.pyplot')"
        );
        let err = parse(json!({"preload": {"ruby": ["x"]}})).unwrap_err();
        assert!(
            err.message
                .starts_with("preload: Unsupported language: ruby."),
            "{}",
            err.message
        );
        let err = parse(json!({"preloads": {}})).unwrap_err();
        assert!(
            err.message.ends_with("Did you mean 'preload'?"),
            "{}",
            err.message
        );
    }

    #[test]
    fn module_names() {
        for good in ["pandas", "matplotlib.pyplot", "_x.y2", "müller"] {
            assert!(is_module_name(good), "{good}");
        }
        for bad in [
            "", ".x", "x.", "a..b", "1x", "a-b", "a b", "a;b", "a\nb", "a.*",
        ] {
            assert!(!is_module_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_unknown_key_names_the_nearest_option() {
        let err = parse(json!({"memoryByte": MIB})).unwrap_err();
        assert_eq!(
            err.message,
            "LocalSession.create: unknown option 'memoryByte'. Did you mean 'memoryBytes'?"
        );
        let err = parse(json!({"outputCapBytes": 1})).unwrap_err();
        assert!(
            err.message.contains("unknown option 'outputCapBytes'"),
            "{}",
            err.message
        );
        let err = parse(json!({"zzz": 1})).unwrap_err();
        assert!(
            err.message.contains("The options are: memoryBytes,"),
            "{}",
            err.message
        );
    }
}
