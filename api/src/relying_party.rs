//! The tenant's WebAuthn relying party: building it from the settings, running registration
//! and assertion under a workflow's user verification, reading what a verified registration
//! tells about the credential, and naming why a ceremony was refused.
//!
//! webauthn-rs's `Webauthn` fixes user verification to `required` for passkeys, while each of
//! our workflows chooses its own (required / preferred / discouraged). So the ceremonies run on
//! webauthn-rs-core's `WebauthnCore`, configured as webauthn-rs configures it (exact origins,
//! no subdomains, no other ports), with the policy passed in; and `required` is checked again
//! here at finish, so the rule holds whatever the library's defaults become.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keyledger_domain::mfa::{
    Attachment, CredentialId, CredentialKind, UserVerification, WebauthnSettings, Workflow,
};
use keyledger_domain::tenant::Tenant;
use keyledger_domain::user::{MfaFailureReason, NewCredential};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticatorAttachment, CreationChallengeResponse, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, WebauthnError,
};
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    AuthenticationResult, AuthenticationState, Credential, CredentialID, PublicKeyCredentialHints,
    RegistrationState, RequestAuthenticationExtensions, UserVerificationPolicy,
};

use crate::error::ApiError;

/// A challenge must be answered within this long (and the browser is told so).
pub const CEREMONY_SECONDS: i64 = 60;

/// The secret kind under which a credential's public key record is kept beside the log.
pub fn passkey_secret_kind(credential_id: &CredentialId) -> String {
    format!("{PASSKEY_SECRET_PREFIX}{credential_id}")
}

pub const PASSKEY_SECRET_PREFIX: &str = "webauthn:";

/// A credential's record kept beside the log: the shape webauthn-rs gives a `Passkey`
/// (`{"cred": ...}`), so records written before the ceremonies moved to webauthn-rs-core
/// read the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub cred: Credential,
    /// The U2F AppID an imported legacy key was registered under: its assertions are signed
    /// for this AppID, which the browser uses when the `appid` extension names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
}

impl KeyRecord {
    pub fn cred_id(&self) -> &CredentialID {
        &self.cred.cred_id
    }

    /// Keeps what an accepted assertion tells: the new sign count and backup flags.
    pub fn update(&mut self, result: &AuthenticationResult) {
        self.cred.counter = result.counter();
        self.cred.backup_state = result.backup_state();
        self.cred.backup_eligible = result.backup_eligible();
    }
}

/// The relying party of a tenant whose WebAuthn is enabled.
pub struct RelyingParty {
    core: WebauthnCore,
}

/// The relying party of a tenant whose WebAuthn is enabled; a clear 409 otherwise.
pub fn relying_party(tenant: &Tenant) -> Result<RelyingParty, ApiError> {
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
    if urls.is_empty() {
        return Err(disabled());
    }
    let core = WebauthnCore::new_unsafe_experts_only(
        tenant.relying_party_name(),
        rp_id.as_str(),
        urls,
        std::time::Duration::from_secs(CEREMONY_SECONDS as u64),
        Some(false),
        Some(false),
    );
    Ok(RelyingParty { core })
}

fn policy(uv: UserVerification) -> UserVerificationPolicy {
    match uv {
        UserVerification::Required => UserVerificationPolicy::Required,
        UserVerification::Preferred => UserVerificationPolicy::Preferred,
        UserVerification::Discouraged => UserVerificationPolicy::Discouraged_DO_NOT_USE,
    }
}

/// What a registration asks of the authenticator.
pub struct RegistrationRequest<'a> {
    pub user_id: uuid::Uuid,
    pub user_name: &'a str,
    pub display_name: &'a str,
    pub exclude: Vec<CredentialID>,
    pub user_verification: UserVerification,
    pub attachment: AuthenticatorAttachment,
    /// The key must keep the credential, so that it can name the user by itself.
    pub discoverable: bool,
}

/// Why an assertion was refused, for the log.
pub type Refusal = MfaFailureReason;

impl RelyingParty {
    pub fn start_registration(
        &self,
        request: RegistrationRequest<'_>,
    ) -> Result<(CreationChallengeResponse, RegistrationState), ApiError> {
        let builder = self
            .core
            .new_challenge_register_builder(
                request.user_id.as_bytes(),
                request.user_name,
                request.display_name,
            )
            .map_err(ApiError::internal)?
            .user_verification_policy(policy(request.user_verification))
            .exclude_credentials(Some(request.exclude))
            .require_resident_key(request.discoverable)
            .authenticator_attachment(Some(request.attachment));
        self.core
            .generate_challenge_register(builder)
            .map_err(ApiError::internal)
    }

    pub fn finish_registration(
        &self,
        credential: &RegisterPublicKeyCredential,
        state: &RegistrationState,
    ) -> Result<KeyRecord, WebauthnError> {
        let cred = self.core.register_credential(credential, state, None)?;
        Ok(KeyRecord { cred, appid: None })
    }

    /// Starts an assertion against `keys` (none: a discoverable one, where the key names the
    /// user), asking the workflow's user verification. `appid` is the U2F AppID that legacy
    /// keys were registered under, when any is offered.
    pub fn start_assertion(
        &self,
        keys: Vec<Credential>,
        workflow: Workflow,
        appid: Option<String>,
    ) -> Result<(RequestChallengeResponse, AuthenticationState), ApiError> {
        // A hint steers the browser to the kind of authenticator the workflow allows; the
        // kind is enforced at finish, since a hint binds no one.
        let hints = match workflow.attachment {
            Attachment::Any => None,
            Attachment::Platform => Some(vec![PublicKeyCredentialHints::ClientDevice]),
            Attachment::CrossPlatform => Some(vec![PublicKeyCredentialHints::SecurityKey]),
        };
        let extensions = appid.map(|appid| RequestAuthenticationExtensions {
            appid: Some(appid),
            uvm: None,
            hmac_get_secret: None,
        });
        let builder = self
            .core
            .new_challenge_authenticate_builder(keys, Some(policy(workflow.user_verification)))
            .map_err(ApiError::internal)?
            .extensions(extensions)
            .hints(hints);
        self.core
            .generate_challenge_authenticate(builder)
            .map_err(ApiError::internal)
    }

    /// Verifies an assertion against `key`, then the workflow's user verification.
    pub fn finish_assertion(
        &self,
        credential: &PublicKeyCredential,
        state: &AuthenticationState,
        key: &KeyRecord,
        user_verification: UserVerification,
    ) -> Result<AuthenticationResult, Refusal> {
        let result = self
            .core
            .authenticate_single_credential(credential, state, &key.cred)
            .map_err(|error| failure_reason(&error))?;
        if user_verification == UserVerification::Required && !result.user_verified() {
            return Err(MfaFailureReason::UserVerificationMissing);
        }
        Ok(result)
    }
}

pub fn credential_id_of(key: &KeyRecord) -> Result<CredentialId, ApiError> {
    let bytes: &[u8] = key.cred_id().as_ref();
    CredentialId::parse(&URL_SAFE_NO_PAD.encode(bytes)).map_err(ApiError::internal)
}

/// What the log records about a newly registered credential, read from webauthn-rs's record
/// of it rather than from the raw attestation (no hand-written CBOR).
pub fn new_credential(
    key: &KeyRecord,
    label: String,
    kind: CredentialKind,
    transports: Vec<String>,
) -> Result<NewCredential, ApiError> {
    let record = serde_json::to_value(key).map_err(ApiError::internal)?;
    let cred = &record["cred"];
    Ok(NewCredential {
        credential_id: credential_id_of(key)?,
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
        user_verified: key.cred.user_verified,
        backup_eligible: key.cred.backup_eligible,
        backed_up: key.cred.backup_state,
        sign_count: key.cred.counter,
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

/// Why an imported U2F key was refused; each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum U2fImportError {
    #[error("the key handle must be base64url")]
    KeyHandle,
    #[error(
        "the public key must be the 65-byte uncompressed P-256 point (0x04 || X || Y), base64url"
    )]
    PublicKey,
    #[error("the AppID must be an https URL (or http on localhost)")]
    AppId,
}

impl U2fImportError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::KeyHandle => "invalid_key_handle",
            Self::PublicKey => "invalid_u2f_public_key",
            Self::AppId => "invalid_app_id",
        }
    }
}

fn base64url(raw: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(raw.trim().trim_end_matches('='))
        .ok()
}

/// The record of a U2F key as a U2F server holds it: the key handle becomes the credential
/// id, the uncompressed P-256 point the COSE EC2 key (ES256), the counter the sign count.
/// U2F keys do no user verification and are not backed up.
pub fn u2f_key_record(
    key_handle: &str,
    public_key: &str,
    counter: u32,
    appid: Option<&str>,
) -> Result<KeyRecord, U2fImportError> {
    use webauthn_rs_core::proto::{
        AttestationFormat, AttestationMetadata, COSEAlgorithm, COSEEC2Key, COSEKey, COSEKeyType,
        ECDSACurve, ParsedAttestation, ParsedAttestationData, RegisteredExtensions,
    };
    let handle = base64url(key_handle).ok_or(U2fImportError::KeyHandle)?;
    let point = base64url(public_key).ok_or(U2fImportError::PublicKey)?;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(U2fImportError::PublicKey);
    }
    // Refuses a point that is not on the curve now, rather than at every login.
    p256::PublicKey::from_sec1_bytes(&point).map_err(|_| U2fImportError::PublicKey)?;
    let appid = match appid {
        None => None,
        Some(raw) => {
            let url = Url::parse(raw.trim()).map_err(|_| U2fImportError::AppId)?;
            let secure = url.scheme() == "https"
                || (url.scheme() == "http" && url.host_str() == Some("localhost"));
            if !secure || url.host_str().is_none() {
                return Err(U2fImportError::AppId);
            }
            Some(raw.trim().to_owned())
        }
    };
    let cred = Credential {
        cred_id: handle,
        cred: COSEKey {
            type_: COSEAlgorithm::ES256,
            key: COSEKeyType::EC_EC2(COSEEC2Key {
                curve: ECDSACurve::SECP256R1,
                x: point[1..33].to_vec(),
                y: point[33..65].to_vec(),
            }),
        },
        counter,
        transports: None,
        user_verified: false,
        backup_eligible: false,
        backup_state: false,
        registration_policy: UserVerificationPolicy::Discouraged_DO_NOT_USE,
        extensions: RegisteredExtensions::none(),
        attestation: ParsedAttestation {
            data: ParsedAttestationData::None,
            metadata: AttestationMetadata::None,
        },
        attestation_format: AttestationFormat::FIDOU2F,
    };
    Ok(KeyRecord { cred, appid })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use keyledger_domain::mfa::Attachment;
    use webauthn_authenticator_rs::WebauthnAuthenticator as _;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_rs::prelude::{Passkey, WebauthnBuilder};

    use super::*;

    fn origin() -> Url {
        Url::parse("https://auth.example.com").unwrap()
    }

    fn core_party() -> RelyingParty {
        RelyingParty {
            core: WebauthnCore::new_unsafe_experts_only(
                "test",
                "example.com",
                vec![origin()],
                std::time::Duration::from_secs(60),
                Some(false),
                Some(false),
            ),
        }
    }

    fn workflow(user_verification: UserVerification) -> Workflow {
        Workflow {
            enabled: true,
            attachment: Attachment::Any,
            user_verification,
        }
    }

    #[test]
    fn a_key_recorded_by_webauthn_rs_before_the_move_to_its_core_still_logs_in() {
        let high = WebauthnBuilder::new("example.com", &origin())
            .unwrap()
            .build()
            .unwrap();
        let mut key = SoftPasskey::new(true);
        let (options, registration) = high
            .start_passkey_registration(uuid::Uuid::from_u128(7), "ada", "Ada", None)
            .unwrap();
        let created = key.do_registration(origin(), options).unwrap();
        let passkey: Passkey = high
            .finish_passkey_registration(&created, &registration)
            .unwrap();
        let stored = serde_json::to_string(&passkey).unwrap();

        let record: KeyRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(record.cred_id(), passkey.cred_id());
        assert_eq!(record.appid, None);
        let rp = core_party();
        let (options, state) = rp
            .start_assertion(
                vec![record.cred.clone()],
                workflow(UserVerification::Required),
                None,
            )
            .unwrap();
        let asserted = key.do_authentication(origin(), options).unwrap();
        let result = rp
            .finish_assertion(&asserted, &state, &record, UserVerification::Required)
            .unwrap();
        assert!(result.user_verified());
    }

    #[test]
    fn a_u2f_key_record_holds_the_point_and_refuses_what_is_not_one() {
        // The P-256 generator: a valid point.
        let point = hex::decode(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
             4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        )
        .unwrap();
        let encoded = URL_SAFE_NO_PAD.encode(&point);
        let handle = URL_SAFE_NO_PAD.encode([9u8; 64]);
        let record = u2f_key_record(&handle, &encoded, 12, Some("https://example.com")).unwrap();
        assert_eq!(record.cred.counter, 12);
        assert_eq!(record.appid.as_deref(), Some("https://example.com"));
        assert!(!record.cred.user_verified);
        let mut off_curve = point.clone();
        off_curve[64] ^= 1;
        assert_eq!(
            u2f_key_record(&handle, &URL_SAFE_NO_PAD.encode(&off_curve), 0, None).unwrap_err(),
            U2fImportError::PublicKey
        );
        assert_eq!(
            u2f_key_record(&handle, &URL_SAFE_NO_PAD.encode(&point[..33]), 0, None).unwrap_err(),
            U2fImportError::PublicKey
        );
        assert_eq!(
            u2f_key_record("$$", &encoded, 0, None).unwrap_err(),
            U2fImportError::KeyHandle
        );
        assert_eq!(
            u2f_key_record(&handle, &encoded, 0, Some("http://example.com")).unwrap_err(),
            U2fImportError::AppId
        );
    }
}
