//! One HTTP attempt: sign, post, classify the answer. Redirects are never followed (a 3xx is
//! a failure), and every connection goes through the guarded resolver.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

use super::guard::{AddressPolicy, GuardedResolver};
use super::signature::{SigningSecret, signature_header};

/// How much of a receiver's answer is kept with the attempt.
pub const RESPONSE_BODY_LIMIT: usize = 1024;

/// The client every delivery uses.
pub fn client(timeout: Duration, policy: AddressPolicy) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver::shared(policy))
        .user_agent(concat!("keyledger-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why there was no 2xx: a status, a timeout, a refused connection.
    pub error: Option<String>,
    pub body: Option<String>,
    /// A 429 or 503 answer's `Retry-After`, in seconds: the next attempt waits at least this.
    pub retry_after: Option<Duration>,
}

impl Response {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }

    pub fn gone(&self) -> bool {
        self.status == Some(StatusCode::GONE.as_u16())
    }

    pub fn latency_ms(&self) -> u64 {
        u64::try_from(self.latency.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Posts `body` to `url`, signed with every secret in `secrets` for this attempt's time.
pub async fn post(
    client: &reqwest::Client,
    policy: &AddressPolicy,
    url: &str,
    secrets: &[SigningSecret],
    message_id: &str,
    now: DateTime<Utc>,
    body: Vec<u8>,
) -> Response {
    let started = Instant::now();
    let refused = |error: String| Response {
        status: None,
        latency: started.elapsed(),
        error: Some(error),
        body: None,
        retry_after: None,
    };
    let target = match url::Url::parse(url) {
        Ok(target) => target,
        Err(e) => return refused(format!("invalid target URL: {e}")),
    };
    // The resolver guards names; an address literal never reaches it, so it is checked here.
    let literal = match target.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(Err(e)) = literal.map(|ip| policy.check(ip)) {
        return refused(e.to_string());
    }
    if target.scheme() != "https" && !policy.allow_http {
        return refused("plain http targets are not allowed".into());
    }
    let timestamp = now.timestamp();
    let signature = signature_header(secrets, message_id, timestamp, &body);
    let sent = client
        .post(target)
        .header("content-type", "application/json")
        .header("webhook-id", message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return refused(describe(&e)),
    };
    let status = response.status();
    let retry_after = retry_after(status, response.headers());
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    kept.truncate(RESPONSE_BODY_LIMIT);
    Response {
        status: Some(status.as_u16()),
        latency: started.elapsed(),
        error: (!status.is_success()).then(|| format!("answered {status}")),
        body: (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()),
        retry_after,
    }
}

/// The longest `Retry-After` honoured: a receiver cannot park a subscription for longer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` in delay-seconds form, on the answers that mean "slow down".
fn retry_after(status: StatusCode, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        let mut why = String::from("connection failed");
        while let Some(s) = source {
            why = format!("connection failed: {s}");
            source = s.source();
        }
        why
    } else {
        format!("request failed: {e}")
    }
}
