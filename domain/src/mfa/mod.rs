//! Second factors: the tenant's WebAuthn settings ([`settings`]) and the values that identify
//! and name a credential ([`credential`]). The credentials themselves live on the user
//! aggregate; ceremonies (challenges, signatures) are the API's, through webauthn-rs.

pub mod credential;
pub mod settings;

pub use credential::{
    CredentialActor, CredentialId, CredentialKind, CredentialLabel, CredentialValueError,
};
pub use settings::{
    Attachment, MfaRequirement, Origin, RelyingPartyId, SettingsError, UserVerification,
    WebauthnSettings, Workflow,
};
