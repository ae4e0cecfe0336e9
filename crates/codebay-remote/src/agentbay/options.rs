//! `AgentBaySession.create()` and `attach()` options, checked once. What an option
//! leaves out comes from the environment (`AGENTBAY_API_KEY`, `AGENTBAY_ENDPOINT`,
//! `AGENTBAY_TIMEOUT_MS`), then AgentBay's defaults; the key has no default.

use std::collections::BTreeMap;
use std::time::Duration;

use codebay_core::options::{check_keys, json_kind, range_error, type_error};
use codebay_core::{CodebayError, ErrorCode};
use codebay_protocol::agentbay::{CODE_IMAGE, DEFAULT_ENDPOINT, DEFAULT_TIMEOUT_MS};
use serde_json::{Map, Value};

use super::api::{ApiClient, ApiKey};

pub const API_KEY_VAR: &str = "AGENTBAY_API_KEY";
pub const ENDPOINT_VAR: &str = "AGENTBAY_ENDPOINT";
pub const TIMEOUT_VAR: &str = "AGENTBAY_TIMEOUT_MS";

/// Reads an environment variable (the process's, or a test's map).
pub type Environment<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Who calls and where: the key, the endpoint and the per-request timeout.
#[derive(Debug, Clone)]
pub struct Connection {
    pub key: ApiKey,
    pub api: ApiClient,
}

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub connection: Connection,
    pub image_id: String,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub connection: Connection,
    pub session_id: String,
}

const CREATE_KEYS: [&str; 5] = ["apiKey", "endpoint", "imageId", "labels", "timeoutMs"];
const ATTACH_KEYS: [&str; 4] = ["apiKey", "sessionId", "endpoint", "timeoutMs"];

impl CreateOptions {
    pub fn from_json(value: &Value, env: Environment) -> Result<Self, CodebayError> {
        let map = object(value, "AgentBaySession.create")?;
        check_keys("AgentBaySession.create", &map, &CREATE_KEYS)?;
        let image_id = text(&map, "imageId")?.unwrap_or_else(|| CODE_IMAGE.to_owned());
        let labels = match map.get("labels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(labels)) => Some(
                labels
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k.clone(), s.clone())),
                        other => Err(type_error(format!(
                            "labels.{k} must be a string, got {}",
                            json_kind(other)
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(type_error(format!(
                    "labels must be an object of strings, got {}",
                    json_kind(other)
                )))
            }
        };
        Ok(CreateOptions {
            connection: connection(&map, env)?,
            image_id,
            labels,
        })
    }
}

impl AttachOptions {
    pub fn from_json(value: &Value, env: Environment) -> Result<Self, CodebayError> {
        let map = object(value, "AgentBaySession.attach")?;
        check_keys("AgentBaySession.attach", &map, &ATTACH_KEYS)?;
        let session_id = text(&map, "sessionId")?.ok_or_else(|| {
            type_error("AgentBaySession.attach needs the sessionId of the cloud session".into())
        })?;
        Ok(AttachOptions {
            connection: connection(&map, env)?,
            session_id,
        })
    }
}

fn object(value: &Value, what: &str) -> Result<Map<String, Value>, CodebayError> {
    match value {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map.clone()),
        other => Err(type_error(format!(
            "{what} takes an options object, got {}",
            json_kind(other)
        ))),
    }
}

/// The options' types and values first, then the key: a bad option is named even when
/// the key is missing too.
fn connection(map: &Map<String, Value>, env: Environment) -> Result<Connection, CodebayError> {
    let endpoint = match text(map, "endpoint")? {
        Some(e) => endpoint_url(&e, "endpoint")?,
        None => match env(ENDPOINT_VAR).filter(|e| !e.trim().is_empty()) {
            Some(e) => endpoint_url(&e, ENDPOINT_VAR)?,
            None => endpoint_url(DEFAULT_ENDPOINT, "the default endpoint")?,
        },
    };
    let timeout = match map.get("timeoutMs") {
        None | Some(Value::Null) => match env(TIMEOUT_VAR).filter(|t| !t.trim().is_empty()) {
            Some(t) => timeout_of(t.trim().parse::<f64>().ok(), TIMEOUT_VAR, &t)?,
            None => Duration::from_millis(DEFAULT_TIMEOUT_MS),
        },
        Some(Value::Number(n)) => timeout_of(n.as_f64(), "timeoutMs", &n.to_string())?,
        Some(other) => {
            return Err(type_error(format!(
                "timeoutMs must be a number of milliseconds, got {}",
                json_kind(other)
            )))
        }
    };
    let key = text(map, "apiKey")?
        .or_else(|| env(API_KEY_VAR).filter(|k| !k.is_empty()))
        .ok_or_else(|| {
            CodebayError::error(
                ErrorCode::NoApiKey,
                format!(
                    "An AgentBay session needs an API key: pass apiKey, or set {API_KEY_VAR} \
                     (the key from the AgentBay console). Nothing was sent."
                ),
            )
        })?;
    Ok(Connection {
        key: ApiKey::new(key),
        api: ApiClient::new(endpoint, timeout),
    })
}

/// A string option; an empty string counts as left out (as the SDK's `||` has it).
fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, CodebayError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(type_error(format!(
            "{key} must be a string, got {}",
            json_kind(other)
        ))),
    }
}

/// A host (`wuyingai.cn-shanghai.aliyuncs.com`, called over HTTPS, as the SDK does) or
/// an `http(s)://host[:port]` URL with no path.
fn endpoint_url(given: &str, what: &str) -> Result<reqwest::Url, CodebayError> {
    let given = given.trim();
    let text = if given.contains("://") {
        given.to_owned()
    } else {
        format!("https://{given}/")
    };
    let bad = |why: &str| {
        range_error(format!(
            "{what} must be a host name or an http(s)://host[:port] URL, got {given:?}: {why}"
        ))
    };
    let url = reqwest::Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("there is no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("AgentBay's API is at the root: no path or query"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials do not belong in the endpoint"));
    }
    Ok(url)
}

/// A timeout option or variable in milliseconds, 1 to a day (RemoteSession's too).
pub(crate) fn timeout_of(
    ms: Option<f64>,
    what: &str,
    given: &str,
) -> Result<Duration, CodebayError> {
    match ms {
        Some(ms) if (1.0..=86_400_000.0).contains(&ms) => Ok(Duration::from_millis(ms as u64)),
        _ => Err(range_error(format!(
            "{what} must be a number of milliseconds from 1 to 86400000, got {given}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codebay_core::ErrorKind;
    use serde_json::json;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_come_from_the_environment_then_agentbay() {
        let env = env_of(&[(API_KEY_VAR, "k-env")]);
        let o = CreateOptions::from_json(&Value::Null, &env).unwrap();
        assert_eq!(o.connection.key.expose(), "k-env");
        assert_eq!(
            o.connection.api.endpoint().as_str(),
            "https://wuyingai.cn-shanghai.aliyuncs.com/"
        );
        assert_eq!(o.connection.api.timeout(), Duration::from_millis(60_000));
        assert_eq!(o.image_id, "code_latest");

        let env = env_of(&[
            (API_KEY_VAR, "k-env"),
            (ENDPOINT_VAR, "http://127.0.0.1:9"),
            (TIMEOUT_VAR, "1500"),
        ]);
        let o = CreateOptions::from_json(&json!({"apiKey": "k-opt"}), &env).unwrap();
        assert_eq!(o.connection.key.expose(), "k-opt");
        assert_eq!(o.connection.api.endpoint().as_str(), "http://127.0.0.1:9/");
        assert_eq!(o.connection.api.timeout(), Duration::from_millis(1500));
    }

    #[test]
    fn a_missing_key_names_the_variable() {
        let e = CreateOptions::from_json(&json!({"apiKey": ""}), &env_of(&[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoApiKey);
        assert!(e.message.contains("AGENTBAY_API_KEY"), "{}", e.message);
        let e = AttachOptions::from_json(&json!({"sessionId": "s-1"}), &env_of(&[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::NoApiKey);
    }

    #[test]
    fn bad_options_are_named_before_the_key() {
        let env = env_of(&[]);
        let bad = [
            (json!({"timeoutMs": 0}), "timeoutMs", ErrorKind::RangeError),
            (json!({"timeoutMs": "5"}), "timeoutMs", ErrorKind::TypeError),
            (
                json!({"endpoint": "ftp://x"}),
                "endpoint",
                ErrorKind::RangeError,
            ),
            (
                json!({"endpoint": "http://x/api"}),
                "endpoint",
                ErrorKind::RangeError,
            ),
            (
                json!({"labels": {"a": 1}}),
                "labels.a",
                ErrorKind::TypeError,
            ),
            (json!({"imageID": "x"}), "imageId", ErrorKind::TypeError),
            (json!([1]), "options object", ErrorKind::TypeError),
        ];
        for (options, named, kind) in bad {
            let e = CreateOptions::from_json(&options, &env).unwrap_err();
            assert_eq!(
                (e.code, e.kind),
                (ErrorCode::InvalidOption, kind),
                "{options}"
            );
            assert!(e.message.contains(named), "{options}: {}", e.message);
        }
        let env = env_of(&[(TIMEOUT_VAR, "soon")]);
        let e = CreateOptions::from_json(&json!({"apiKey": "k"}), &env).unwrap_err();
        assert!(e.message.contains(TIMEOUT_VAR), "{}", e.message);
        let e = AttachOptions::from_json(&json!({"apiKey": "k"}), &env_of(&[])).unwrap_err();
        assert!(e.message.contains("sessionId"), "{}", e.message);
    }
}
