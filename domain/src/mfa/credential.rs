//! What identifies and names a second factor.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::values::DisplayName;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialValueError {
    #[error("invalid credential id: {why}")]
    InvalidCredentialId { why: &'static str },
    #[error("invalid label: {why}")]
    InvalidLabel { why: &'static str },
}

impl CredentialValueError {
    /// A stable snake_case code for API answers; never changes once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidCredentialId { .. } => "invalid_credential_id",
            Self::InvalidLabel { .. } => "invalid_credential_label",
        }
    }
}

/// WebAuthn caps credential ids at 1023 bytes, which is 1364 base64url characters.
pub const CREDENTIAL_ID_MAX_CHARS: usize = 1364;
pub const LABEL_MAX_CODE_POINTS: usize = 64;

/// A credential id as the browser shows it: unpadded base64url of 16 to 1023 bytes. Never
/// edited once registered.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct CredentialId(String);

impl CredentialId {
    pub fn parse(raw: &str) -> Result<Self, CredentialValueError> {
        let invalid = |why| Err(CredentialValueError::InvalidCredentialId { why });
        let value = raw.trim_end_matches('=');
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid("it must be unpadded base64url");
        }
        // 16 bytes are 22 characters; a length of 1 modulo 4 encodes no whole byte.
        if value.len() < 22 || value.len() > CREDENTIAL_ID_MAX_CHARS || value.len() % 4 == 1 {
            return invalid("it must encode 16 to 1023 bytes");
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CredentialId {
    type Error = CredentialValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CredentialId> for String {
    fn from(value: CredentialId) -> Self {
        value.0
    }
}

impl std::fmt::Display for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label the user gives a key: the display-name rules, at most 64 code points.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct CredentialLabel(String);

impl CredentialLabel {
    pub fn parse(raw: &str) -> Result<Self, CredentialValueError> {
        let name = DisplayName::parse(raw).map_err(|_| CredentialValueError::InvalidLabel {
            why: "it must be 1 to 64 characters without control characters",
        })?;
        if name.as_str().chars().count() > LABEL_MAX_CODE_POINTS {
            return Err(CredentialValueError::InvalidLabel {
                why: "it must be 1 to 64 characters without control characters",
            });
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CredentialLabel {
    type Error = CredentialValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CredentialLabel> for String {
    fn from(value: CredentialLabel) -> Self {
        value.0
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A roaming (cross-platform) authenticator: a USB, NFC or BLE key.
    SecurityKey,
    /// A platform authenticator built into the device (Touch ID, Windows Hello, Android).
    DeviceAuthenticator,
    /// A U2F key brought in by import: usable, renamable, removable, never newly registered.
    Legacy,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecurityKey => "security_key",
            Self::DeviceAuthenticator => "device_authenticator",
            Self::Legacy => "legacy",
        }
    }
}

/// Who registered (or renamed, or removed) a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CredentialActor {
    /// The user themselves.
    #[serde(rename = "self")]
    User,
    Admin {
        id: String,
    },
}

impl CredentialActor {
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_id_is_unpadded_base64url_of_16_to_1023_bytes() {
        let id = CredentialId::parse("AAAAAAAAAAAAAAAAAAAAAA==").unwrap();
        assert_eq!(id.as_str(), "AAAAAAAAAAAAAAAAAAAAAA");
        for bad in [
            "short",
            "AAAAAAAAAAAAAAAAAAAAA+",
            "AAAAAAAAAAAAAAAAAAAA/A",
            "AAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                CredentialId::parse(bad).unwrap_err().code(),
                "invalid_credential_id",
                "{bad}"
            );
        }
        assert!(CredentialId::parse(&"A".repeat(CREDENTIAL_ID_MAX_CHARS + 3)).is_err());
    }

    #[test]
    fn a_label_is_trimmed_and_short() {
        assert_eq!(
            CredentialLabel::parse("  YubiKey 5 ").unwrap().as_str(),
            "YubiKey 5"
        );
        assert!(CredentialLabel::parse(" ").is_err());
        assert!(CredentialLabel::parse(&"k".repeat(65)).is_err());
        assert!(CredentialLabel::parse("a\u{7}b").is_err());
    }
}
