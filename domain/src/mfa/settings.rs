//! A tenant's WebAuthn and MFA settings, valid by construction.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::mfa::CredentialKind;
use crate::values::DisplayName;

/// Why WebAuthn settings were refused; `why` is meant for the admin who sent them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    #[error("invalid relying party id: {why}")]
    InvalidRelyingPartyId { why: String },
    #[error("invalid origin {origin:?}: {why}")]
    InvalidOrigin { origin: String, why: &'static str },
    #[error("invalid relying party name: {why}")]
    InvalidRelyingPartyName { why: &'static str },
}

impl SettingsError {
    /// A stable snake_case code for API answers; never changes once shipped.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRelyingPartyId { .. } => "invalid_relying_party_id",
            Self::InvalidOrigin { .. } => "invalid_origin",
            Self::InvalidRelyingPartyName { .. } => "invalid_relying_party_name",
        }
    }
}

/// At most this many allowed origins: each is checked at every ceremony.
pub const MAX_ORIGINS: usize = 32;

/// A web origin a ceremony may come from: `https://host[:port]`, or `http://localhost[:port]`
/// (browsers treat localhost as a secure context). No path, query or credentials.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(try_from = "String", into = "String")]
pub struct Origin {
    text: String,
    host: String,
}

impl Origin {
    pub fn parse(raw: &str) -> Result<Self, SettingsError> {
        let invalid = |why| SettingsError::InvalidOrigin {
            origin: raw.chars().take(200).collect(),
            why,
        };
        let url = url::Url::parse(raw.trim()).map_err(|_| invalid("it is not a URL"))?;
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_ascii_lowercase(),
            Some(_) => return Err(invalid("WebAuthn does not allow IP addresses")),
            None => return Err(invalid("it has no host")),
        };
        match url.scheme() {
            "https" => {}
            "http" if host == "localhost" => {}
            _ => return Err(invalid("only https (or http on localhost) is allowed")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("it carries credentials"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("an origin has no path, query or fragment"));
        }
        let text = match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(Self { text, host })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The origin's effective domain.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl TryFrom<String> for Origin {
    type Error = SettingsError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Origin> for String {
    fn from(value: Origin) -> Self {
        value.text
    }
}

/// The relying party id: a lower-case domain name that is not a public suffix. Whether it fits
/// an origin is [`RelyingPartyId::fits`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct RelyingPartyId(String);

impl RelyingPartyId {
    pub fn parse(raw: &str) -> Result<Self, SettingsError> {
        let invalid = |why: &str| SettingsError::InvalidRelyingPartyId { why: why.into() };
        let value = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if value.is_empty() || value.len() > 253 {
            return Err(invalid("it must be a domain name of 1 to 253 characters"));
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !value.split('.').all(label_ok) {
            return Err(invalid(
                "it must be a domain name (letters, digits and hyphens between dots; IDNs in punycode)",
            ));
        }
        if value
            .split('.')
            .all(|label| label.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(invalid("WebAuthn does not allow IP addresses"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this id may serve `origin`: it is the origin's host (its effective domain) or a
    /// registrable suffix of it, on a label boundary. A public suffix (`com`, `co.uk`) is
    /// never registrable, unless it is the very host (`localhost`).
    pub fn fits(&self, origin: &Origin) -> Result<(), SettingsError> {
        let host = origin.host();
        if host == self.0 {
            return Ok(());
        }
        let invalid = |why: String| SettingsError::InvalidRelyingPartyId { why };
        if !host.ends_with(&format!(".{}", self.0)) {
            return Err(invalid(format!(
                "{} is neither the host of {} nor a suffix of it",
                self.0,
                origin.as_str()
            )));
        }
        if is_public_suffix(&self.0) {
            return Err(invalid(format!(
                "{} is a public suffix, which no site may claim as its relying party id",
                self.0
            )));
        }
        Ok(())
    }
}

/// Per the public suffix list (ICANN and private sections).
fn is_public_suffix(domain: &str) -> bool {
    psl::suffix(domain.as_bytes()).is_some_and(|suffix| suffix.as_bytes() == domain.as_bytes())
}

impl TryFrom<String> for RelyingPartyId {
    type Error = SettingsError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RelyingPartyId> for String {
    fn from(value: RelyingPartyId) -> Self {
        value.0
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    #[default]
    Any,
    Platform,
    CrossPlatform,
}

impl Attachment {
    /// Whether a credential of `kind` may be used where this attachment is asked for. Legacy
    /// U2F keys are roaming keys, so they count as cross-platform.
    pub fn allows(self, kind: CredentialKind) -> bool {
        match self {
            Self::Any => true,
            Self::Platform => kind == CredentialKind::DeviceAuthenticator,
            Self::CrossPlatform => {
                matches!(kind, CredentialKind::SecurityKey | CredentialKind::Legacy)
            }
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UserVerification {
    #[default]
    Required,
    Preferred,
    Discouraged,
}

/// One WebAuthn workflow: bootstrap (passwordless first factor) or reauthentication (second
/// factor after the password, and step-up).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Workflow {
    pub enabled: bool,
    pub attachment: Attachment,
    pub user_verification: UserVerification,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MfaRequirement {
    Required,
    #[default]
    Optional,
}

/// A tenant's WebAuthn settings as recorded by `tenant.webauthn_settings.changed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebauthnSettings {
    pub enabled: bool,
    /// `None` until configured; required when `enabled`.
    pub relying_party_id: Option<RelyingPartyId>,
    /// `None`: the tenant's name.
    pub relying_party_name: Option<String>,
    pub allowed_origins: Vec<Origin>,
    /// When on, refused ceremonies record their detailed reason as an event.
    pub debug: bool,
    pub bootstrap: Workflow,
    pub reauthentication: Workflow,
    /// When off, only admins register keys for users.
    pub self_registration: bool,
    /// The tenant's default; a user's own requirement overrides it.
    pub mfa_requirement: MfaRequirement,
}

impl WebauthnSettings {
    /// What a new registration asks of the authenticator: a key must be able to do what the
    /// strictest enabled workflow will ask at login, or it could never be used there.
    pub fn registration_user_verification(&self) -> UserVerification {
        let enabled = [self.bootstrap, self.reauthentication]
            .into_iter()
            .filter(|w| w.enabled)
            .map(|w| w.user_verification);
        let mut strictest = UserVerification::Discouraged;
        for uv in enabled {
            strictest = match (strictest, uv) {
                (_, UserVerification::Required) | (UserVerification::Required, _) => {
                    UserVerification::Required
                }
                (_, UserVerification::Preferred) | (UserVerification::Preferred, _) => {
                    UserVerification::Preferred
                }
                _ => UserVerification::Discouraged,
            };
        }
        strictest
    }

    /// Every origin fits the relying party id, a name when given is a valid display name, and
    /// an enabled WebAuthn has an id and at least one origin.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(name) = &self.relying_party_name {
            DisplayName::parse(name).map_err(|_| SettingsError::InvalidRelyingPartyName {
                why: "it must be 1 to 200 characters without control characters",
            })?;
        }
        if self.allowed_origins.len() > MAX_ORIGINS {
            return Err(SettingsError::InvalidOrigin {
                origin: String::new(),
                why: "at most 32 origins are allowed",
            });
        }
        match &self.relying_party_id {
            Some(id) => {
                for origin in &self.allowed_origins {
                    id.fits(origin)?;
                }
            }
            None if self.enabled => {
                return Err(SettingsError::InvalidRelyingPartyId {
                    why: "WebAuthn cannot be enabled without a relying party id".into(),
                });
            }
            None => {}
        }
        if self.enabled && self.allowed_origins.is_empty() {
            return Err(SettingsError::InvalidOrigin {
                origin: String::new(),
                why: "WebAuthn cannot be enabled without an allowed origin",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fits(rp_id: &str, origin: &str) -> Result<(), SettingsError> {
        RelyingPartyId::parse(rp_id)?.fits(&Origin::parse(origin)?)
    }

    #[test]
    fn the_relying_party_id_may_be_the_host_or_a_registrable_suffix() {
        assert_eq!(fits("auth.example.com", "https://auth.example.com"), Ok(()));
        assert_eq!(fits("example.com", "https://auth.example.com"), Ok(()));
        assert_eq!(fits("localhost", "http://localhost:8080"), Ok(()));
    }

    #[test]
    fn a_deeper_name_or_a_public_suffix_is_not_a_valid_relying_party_id() {
        let deeper = fits("m.auth.example.com", "https://auth.example.com").unwrap_err();
        assert_eq!(deeper.code(), "invalid_relying_party_id");
        assert!(deeper.to_string().contains("neither the host"), "{deeper}");
        let public = fits("com", "https://auth.example.com").unwrap_err();
        assert!(public.to_string().contains("public suffix"), "{public}");
        let private = fits("co.uk", "https://auth.example.co.uk").unwrap_err();
        assert!(private.to_string().contains("public suffix"), "{private}");
        // A suffix that is not on a label boundary is not a suffix of the domain.
        assert!(fits("ample.com", "https://auth.example.com").is_err());
        assert!(fits("other.com", "https://auth.example.com").is_err());
    }

    #[test]
    fn origins_must_be_secure_bare_and_named() {
        assert_eq!(
            Origin::parse("https://Auth.Example.com:8443/")
                .unwrap()
                .as_str(),
            "https://auth.example.com:8443"
        );
        for bad in [
            "http://auth.example.com",
            "https://127.0.0.1",
            "https://auth.example.com/login",
            "https://user:pw@auth.example.com",
            "not a url",
            "ftp://auth.example.com",
        ] {
            assert_eq!(
                Origin::parse(bad).unwrap_err().code(),
                "invalid_origin",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_relying_party_id_is_a_domain_name() {
        assert_eq!(
            RelyingPartyId::parse(" Example.COM. ").unwrap().as_str(),
            "example.com"
        );
        for bad in [
            "",
            "exa mple.com",
            "-a.com",
            "a..com",
            "10.0.0.1",
            "https://example.com",
        ] {
            assert!(RelyingPartyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_attachment_allows_the_kinds_of_its_side() {
        use CredentialKind::*;
        assert!(Attachment::Any.allows(SecurityKey) && Attachment::Any.allows(DeviceAuthenticator));
        assert!(Attachment::Platform.allows(DeviceAuthenticator));
        assert!(!Attachment::Platform.allows(SecurityKey) && !Attachment::Platform.allows(Legacy));
        assert!(Attachment::CrossPlatform.allows(SecurityKey));
        assert!(Attachment::CrossPlatform.allows(Legacy));
        assert!(!Attachment::CrossPlatform.allows(DeviceAuthenticator));
    }

    #[test]
    fn registration_asks_the_verification_of_the_strictest_enabled_workflow() {
        let workflow = |enabled, user_verification| Workflow {
            enabled,
            attachment: Attachment::Any,
            user_verification,
        };
        let mut settings = WebauthnSettings {
            bootstrap: workflow(false, UserVerification::Required),
            reauthentication: workflow(true, UserVerification::Discouraged),
            ..WebauthnSettings::default()
        };
        assert_eq!(
            settings.registration_user_verification(),
            UserVerification::Discouraged
        );
        settings.bootstrap.enabled = true;
        assert_eq!(
            settings.registration_user_verification(),
            UserVerification::Required
        );
        settings.bootstrap.user_verification = UserVerification::Preferred;
        assert_eq!(
            settings.registration_user_verification(),
            UserVerification::Preferred
        );
    }

    #[test]
    fn enabled_settings_need_an_id_and_an_origin_that_fit() {
        let mut settings = WebauthnSettings {
            enabled: true,
            ..WebauthnSettings::default()
        };
        assert_eq!(
            settings.validate().unwrap_err().code(),
            "invalid_relying_party_id"
        );
        settings.relying_party_id = Some(RelyingPartyId::parse("example.com").unwrap());
        assert_eq!(settings.validate().unwrap_err().code(), "invalid_origin");
        settings.allowed_origins = vec![Origin::parse("https://other.org").unwrap()];
        assert_eq!(
            settings.validate().unwrap_err().code(),
            "invalid_relying_party_id"
        );
        settings.allowed_origins = vec![Origin::parse("https://auth.example.com").unwrap()];
        assert_eq!(settings.validate(), Ok(()));
    }
}
