//! Where a subscription's deliveries go. The domain checks the URL's shape; whether its host
//! may be reached (no loopback or private addresses unless the operator allows them) is
//! checked where addresses are resolved, at registration and again at every connection.

use serde::{Deserialize, Serialize};
use thiserror::Error;

const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TargetUrlError {
    #[error("the target URL is not a URL: {0}")]
    Unparsable(String),
    #[error("the target URL must use http or https")]
    Scheme,
    #[error("the target URL must name a host")]
    NoHost,
    #[error("the target URL must not carry a user name or password")]
    Credentials,
    #[error("the target URL must not carry a fragment")]
    Fragment,
    #[error("the target URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
}

/// An absolute http(s) URL without credentials or fragment, kept in its normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct TargetUrl(String);

impl TargetUrl {
    pub fn parse(raw: &str) -> Result<Self, TargetUrlError> {
        if raw.len() > MAX_URL_LEN {
            return Err(TargetUrlError::TooLong);
        }
        let url = url::Url::parse(raw).map_err(|e| TargetUrlError::Unparsable(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetUrlError::Scheme);
        }
        if url.host().is_none() {
            return Err(TargetUrlError::NoHost);
        }
        // Credentials in a URL end up in logs and views; receivers authenticate us by signature.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetUrlError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(TargetUrlError::Fragment);
        }
        Ok(Self(url.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https:")
    }
}

impl TryFrom<String> for TargetUrl {
    type Error = TargetUrlError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<TargetUrl> for String {
    fn from(url: TargetUrl) -> Self {
        url.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_are_kept_normalised() {
        let url = TargetUrl::parse("HTTPS://Hooks.Example.com/in?x=1").unwrap();
        assert_eq!(url.as_str(), "https://hooks.example.com/in?x=1");
        assert!(url.is_https());
        assert!(
            !TargetUrl::parse("http://127.0.0.1:9000/")
                .unwrap()
                .is_https()
        );
    }

    #[test]
    fn other_shapes_are_refused_with_the_reason() {
        assert!(matches!(
            TargetUrl::parse("not a url"),
            Err(TargetUrlError::Unparsable(_))
        ));
        assert_eq!(
            TargetUrl::parse("ftp://example.com/"),
            Err(TargetUrlError::Scheme)
        );
        assert_eq!(
            TargetUrl::parse("file:///etc/passwd"),
            Err(TargetUrlError::Scheme)
        );
        assert_eq!(
            TargetUrl::parse("https://user:pw@example.com/"),
            Err(TargetUrlError::Credentials)
        );
        assert_eq!(
            TargetUrl::parse("https://example.com/#frag"),
            Err(TargetUrlError::Fragment)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(TargetUrl::parse(&long), Err(TargetUrlError::TooLong));
    }
}
