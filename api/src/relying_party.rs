//! The tenant's WebAuthn relying party, through webauthn-rs: building it from the settings,
//! reading what a verified registration tells about the credential, and naming why a
//! ceremony was refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyledger_domain::mfa::{CredentialId, CredentialKind, WebauthnSettings};
use keyledger_domain::tenant::Tenant;
use keyledger_domain::user::{MfaFailureReason, NewCredential};
use webauthn_rs::prelude::{Passkey, Url, Webauthn, WebauthnBuilder, WebauthnError};

use crate::error::ApiError;

/// A challenge must be answered within this long (and the browser is told so).
pub const CEREMONY_SECONDS: i64 = 60;

/// The secret kind under which a credential's public key record is kept beside the log.
pub fn passkey_secret_kind(credential_id: &CredentialId) -> String {
    format!("{PASSKEY_SECRET_PREFIX}{credential_id}")
}

pub const PASSKEY_SECRET_PREFIX: &str = "webauthn:";

/// The relying party of a tenant whose WebAuthn is enabled; a clear 409 otherwise.
pub fn relying_party(tenant: &Tenant) -> Result<Webauthn, ApiError> {
    let settings: &WebauthnSettings = tenant.webauthn_settings();
    let disabled = || ApiError::Conflict {
        code: "webauthn_disabled",
        detail: "WebAuthn is not enabled for this tenant".into(),
    };
    if !settings.enabled {
        return Err(disabled());
    }
    let rp_id = settings.relying_party_id.as_ref().ok_or_else(disabled)?;
    let urls = settings
        .allowed_origins
        .iter()
        .map(|origin| Url::parse(origin.as_str()).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    let (first, rest) = urls.split_first().ok_or_else(disabled)?;
    let mut builder = WebauthnBuilder::new(rp_id.as_str(), first)
        .map_err(ApiError::internal)?
        .rp_name(tenant.relying_party_name());
    for url in rest {
        builder = builder.append_allowed_origin(url);
    }
    builder
        .timeout(std::time::Duration::from_secs(CEREMONY_SECONDS as u64))
        .build()
        .map_err(ApiError::internal)
}

pub fn credential_id_of(passkey: &Passkey) -> Result<CredentialId, ApiError> {
    let bytes: &[u8] = passkey.cred_id().as_ref();
    CredentialId::parse(&URL_SAFE_NO_PAD.encode(bytes)).map_err(ApiError::internal)
}

/// What the log records about a newly registered credential. webauthn-rs keeps the flags in
/// its serialised record of the credential; they are read from there rather than from the
/// raw attestation (no hand-written CBOR).
pub fn new_credential(
    passkey: &Passkey,
    label: String,
    kind: CredentialKind,
    transports: Vec<String>,
) -> Result<NewCredential, ApiError> {
    let record = serde_json::to_value(passkey).map_err(ApiError::internal)?;
    let cred = &record["cred"];
    let flag = |name: &str| cred[name].as_bool().unwrap_or(false);
    Ok(NewCredential {
        credential_id: credential_id_of(passkey)?,
        label,
        kind,
        // With attestation "none" (what passkeys ask for) the authenticator model is not
        // attested; it is recorded as the nil AAGUID then.
        aaguid: cred["attestation"]["metadata"]["Packed"]["aaguid"]
            .as_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .unwrap_or_default(),
        authenticator_name: None,
        transports,
        user_verified: flag("user_verified"),
        backup_eligible: flag("backup_eligible"),
        backed_up: flag("backup_state"),
        sign_count: cred["counter"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0),
    })
}

/// The specific reason for the log; the client only ever hears a generic refusal.
pub fn failure_reason(error: &WebauthnError) -> MfaFailureReason {
    match error {
        WebauthnError::InvalidRPOrigin => MfaFailureReason::WrongOrigin,
        WebauthnError::InvalidRPIDHash => MfaFailureReason::WrongRelyingParty,
        WebauthnError::MismatchedChallenge => MfaFailureReason::ChallengeExpiredOrUsed,
        WebauthnError::UserNotVerified => MfaFailureReason::UserVerificationMissing,
        WebauthnError::CredentialPossibleCompromise => MfaFailureReason::SignCountRegressed,
        WebauthnError::CredentialNotFound => MfaFailureReason::UnknownCredential,
        WebauthnError::AuthenticationFailure => MfaFailureReason::InvalidSignature,
        _ => MfaFailureReason::CeremonyRefused,
    }
}
