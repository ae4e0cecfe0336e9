//! One AgentBay OpenAPI call over HTTP: the query and headers the SDK sends, the form,
//! the answer read into its envelope, and every way it can fail named as an [`ApiError`].

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use codebay_protocol::agentbay::{Action, ApiEnvelope, CommonQuery, API_VERSION};
use serde::Serialize;

/// The most of an answer that is read: a run's output is capped well below it.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// How much of a body that is not an answer an error quotes.
const SNIPPET_CHARS: usize = 200;

/// The API key. Its `Debug` form hides it, so no error or log line can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The form field the SDK sends the key in.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<hidden>)")
    }
}

/// Why a call did not give an answer to read. The messages name the action and what
/// happened, never the key (it is in the body, which no message quotes).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The gateway answered with a refusal: `Success: false`, or a failed status with
    /// a JSON body. The message is the SDK's `[<Code>] <Message>`.
    #[error("{refusal}")]
    Refused { refusal: String, request_id: String },
    #[error(
        "AgentBay answered {action} with HTTP {status} and a body that is not an answer: {snippet}"
    )]
    Status {
        action: &'static str,
        status: String,
        snippet: String,
    },
    #[error(
        "AgentBay answered {action} with a body that is not a JSON answer ({reason}): {snippet}"
    )]
    NotJson {
        action: &'static str,
        reason: String,
        snippet: String,
    },
    #[error("AgentBay did not answer {action} within {ms} ms (timeoutMs)")]
    Timeout {
        action: &'static str,
        ms: u128,
        #[source]
        source: reqwest::Error,
    },
    #[error("could not connect to AgentBay at {endpoint} for {action}: {reason}")]
    Connect {
        action: &'static str,
        endpoint: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the TLS handshake with AgentBay at {endpoint} failed for {action}: {reason}")]
    Tls {
        action: &'static str,
        endpoint: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the {action} request to AgentBay at {endpoint} failed: {reason}")]
    Transport {
        action: &'static str,
        endpoint: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
}

impl ApiError {
    /// The gateway's request id, when it answered with one.
    pub fn request_id(&self) -> String {
        match self {
            ApiError::Refused { request_id, .. } => request_id.clone(),
            _ => String::new(),
        }
    }

    /// A failure before the request reached the gateway, so sending it again cannot
    /// do it twice.
    pub fn is_connect(&self) -> bool {
        matches!(self, ApiError::Connect { .. } | ApiError::Tls { .. })
    }
}

/// Where the calls go and how long each may take.
#[derive(Debug, Clone)]
pub struct ApiClient {
    endpoint: reqwest::Url,
    timeout: Duration,
}

/// One client for the process: its connection pool is shared by every session.
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!(
                "codebay/",
                env!("CARGO_PKG_VERSION"),
                " (AlibabaCloud OpenAPI RPC; linux)"
            ))
            .build()
            .expect("a rustls HTTP client builds")
    })
}

impl ApiClient {
    pub fn new(endpoint: reqwest::Url, timeout: Duration) -> ApiClient {
        ApiClient { endpoint, timeout }
    }

    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `POST /` with the action's query and `form`; the answer's envelope, or why there
    /// is none. The whole call, body included, is bounded by the timeout.
    pub async fn call(
        &self,
        action: Action,
        form: &impl Serialize,
    ) -> Result<ApiEnvelope, ApiError> {
        let query = CommonQuery {
            action,
            format: "json".into(),
            version: API_VERSION.into(),
            timestamp: utc_timestamp(SystemTime::now()),
            signature_nonce: nonce(),
        };
        let sent = http()
            .post(self.endpoint.clone())
            .query(&query)
            .header("x-acs-version", API_VERSION)
            .header("x-acs-action", action.as_str())
            .form(form)
            .timeout(self.timeout)
            .send();
        let name = action.as_str();
        let response = sent.await.map_err(|e| self.failure(name, e))?;
        let status = response.status();
        let body = read_body(response)
            .await
            .map_err(|e| self.failure(name, e))?;
        let parsed = serde_json::from_slice::<ApiEnvelope>(&body);
        if !status.is_success() {
            return Err(match parsed {
                Ok(e) if e.code.is_some() || e.message.is_some() => refused(&e),
                _ => ApiError::Status {
                    action: name,
                    status: status.to_string(),
                    snippet: snippet(&body),
                },
            });
        }
        let envelope = parsed.map_err(|e| ApiError::NotJson {
            action: name,
            reason: e.to_string(),
            snippet: snippet(&body),
        })?;
        if envelope.success == Some(false) {
            return Err(refused(&envelope));
        }
        Ok(envelope)
    }

    fn failure(&self, action: &'static str, source: reqwest::Error) -> ApiError {
        let endpoint = self.endpoint.as_str().trim_end_matches('/').to_owned();
        let reason = causes(&source);
        if source.is_timeout() {
            return ApiError::Timeout {
                action,
                ms: self.timeout.as_millis(),
                source,
            };
        }
        if source.is_connect() {
            return if is_tls(&source) {
                ApiError::Tls {
                    action,
                    endpoint,
                    reason,
                    source,
                }
            } else {
                ApiError::Connect {
                    action,
                    endpoint,
                    reason,
                    source,
                }
            };
        }
        ApiError::Transport {
            action,
            endpoint,
            reason,
            source,
        }
    }
}

/// Whether rustls refused somewhere in the chain (a bad certificate, a peer that does
/// not speak TLS), as opposed to a connection that could not be made or was cut.
fn is_tls(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        // An io::Error's `source()` skips the error it wraps, and hyper wraps rustls's
        // error in two of them: look inside each.
        let mut inner = Some(e);
        while let Some(i) = inner {
            if i.is::<rustls::Error>() {
                return true;
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn std::error::Error + 'static));
        }
        source = e.source();
    }
    false
}

fn refused(envelope: &ApiEnvelope) -> ApiError {
    ApiError::Refused {
        refusal: envelope.refusal(),
        request_id: envelope.request_id.clone().unwrap_or_default(),
    }
}

/// The body, up to [`MAX_ANSWER_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}

/// What went wrong under reqwest's own words (which name the URL, already named).
fn causes(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() {
        let text = error.to_string();
        match error.url() {
            Some(url) => text.replace(url.as_str(), "the endpoint"),
            None => text,
        }
    } else {
        parts.join(": ")
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".into();
    }
    let mut cut: String = text.chars().take(SNIPPET_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// A value no other request of this process, or of another, sends: 128 bits from two
/// randomly keyed hashers and a counter.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let half = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC, the SDK's `Timestamp`.
pub fn utc_timestamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_without_a_fraction() {
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_180_645), "2026-12-02T03:04:05Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn nonces_differ() {
        let a: std::collections::BTreeSet<String> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|n| n.len() == 32));
    }

    #[test]
    fn the_key_has_no_debug_form() {
        let key = ApiKey::new("sk-secret".into());
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(key.bearer(), "Bearer sk-secret");
    }

    #[test]
    fn a_snippet_is_short_and_says_when_empty() {
        assert_eq!(snippet(b"  "), "(empty)");
        let long = "x".repeat(500);
        assert_eq!(snippet(long.as_bytes()).chars().count(), SNIPPET_CHARS + 1);
    }
}
