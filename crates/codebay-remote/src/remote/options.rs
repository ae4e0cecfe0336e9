//! `RemoteSession.connect()` options: `endpoint` (a URL or a list of them), `apiKey`
//! (default `CODEBAY_API_KEY`), `timeoutMs` (each request other than a run; default 30 s).

use std::time::Duration;

use codebay_core::options::{check_keys, json_kind, range_error, type_error};
use codebay_core::CodebayError;
use serde_json::Value;

use crate::agentbay::options::{timeout_of, Environment};

pub const API_KEY_VAR: &str = "CODEBAY_API_KEY";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const KEYS: [&str; 3] = ["endpoint", "apiKey", "timeoutMs"];

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub endpoints: Vec<reqwest::Url>,
    pub api_key: String,
    pub timeout: Duration,
}

impl ConnectOptions {
    pub fn from_json(value: &Value, env: Environment) -> Result<Self, CodebayError> {
        let map = match value {
            Value::Object(map) => map,
            other => {
                return Err(type_error(format!(
                    "RemoteSession.connect takes an options object with an endpoint, got {}",
                    json_kind(other)
                )))
            }
        };
        check_keys("RemoteSession.connect", map, &KEYS)?;
        let endpoints = match map.get("endpoint") {
            Some(Value::String(e)) => vec![endpoint_url(e)?],
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .map(|e| match e {
                    Value::String(e) => endpoint_url(e),
                    other => Err(type_error(format!(
                        "endpoint must be a URL or a list of URLs, got a list holding {}",
                        json_kind(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(type_error(format!(
                    "endpoint must be a URL or a non-empty list of URLs, got {}",
                    json_kind(other)
                )))
            }
            None => return Err(type_error("RemoteSession.connect needs an endpoint".into())),
        };
        let api_key = match map.get("apiKey") {
            None | Some(Value::Null) => env(API_KEY_VAR).unwrap_or_default(),
            Some(Value::String(k)) => k.clone(),
            Some(other) => {
                return Err(type_error(format!(
                    "apiKey must be a string, got {}",
                    json_kind(other)
                )))
            }
        };
        let timeout = match map.get("timeoutMs") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(Value::Number(n)) => timeout_of(n.as_f64(), "timeoutMs", &n.to_string())?,
            Some(other) => {
                return Err(type_error(format!(
                    "timeoutMs must be a number, got {}",
                    json_kind(other)
                )))
            }
        };
        Ok(ConnectOptions {
            endpoints,
            api_key,
            timeout,
        })
    }
}

/// `http(s)://host:port` (the server's MCP endpoint `/mcp` is added) or a URL with its path.
fn endpoint_url(given: &str) -> Result<reqwest::Url, CodebayError> {
    let mut url = reqwest::Url::parse(given.trim()).map_err(|e| {
        range_error(format!(
            "endpoint must be an http(s) URL such as 'http://127.0.0.1:8931/mcp', got {given:?}: {e}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(range_error(format!(
            "endpoint must be an http(s) URL, got {given:?}"
        )));
    }
    if url.path() == "/" {
        url.set_path("/mcp");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_get_their_mcp_path_and_the_key_its_default() {
        let env = |name: &str| (name == API_KEY_VAR).then(|| "k-env".to_owned());
        let o = ConnectOptions::from_json(
            &json!({"endpoint": ["http://a:1", "http://b:2/x/mcp"]}),
            &env,
        )
        .unwrap();
        let shown: Vec<&str> = o.endpoints.iter().map(|u| u.as_str()).collect();
        assert_eq!(shown, ["http://a:1/mcp", "http://b:2/x/mcp"]);
        assert_eq!(o.api_key, "k-env");
        for bad in [
            json!({}),
            json!({"endpoint": []}),
            json!({"endpoint": "ftp://x"}),
            json!({"endpoint": "http://a", "timeoutMs": 0}),
        ] {
            assert!(ConnectOptions::from_json(&bad, &env).is_err(), "{bad}");
        }
    }
}
