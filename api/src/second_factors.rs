//! What the second-factor routes share: the user's passkey records, registration ceremonies
//! begun and finished for a user (by themselves or an admin), MFA tokens, TOTP codes.

use chrono::{DateTime, Duration, Utc};
use keyledger_domain::mfa::{
    Attachment, CredentialActor, CredentialId, CredentialKind, CredentialLabel,
};
use keyledger_domain::tenant::Tenant;
use keyledger_domain::user::{User, UserCommand};
use keyledger_store::{Ceremony, ClaimChange, CommandContext, SecretWrite, SideWrites};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder, Totp};
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticatorAttachment, CreationChallengeResponse, RegisterPublicKeyCredential,
};
use webauthn_rs_core::proto::RegistrationState as CoreRegistrationState;

use crate::commands::{CREDENTIAL_CLAIM, CREDENTIAL_CLAIM_SCOPE, user_error, user_stream};
use crate::error::ApiError;
use crate::relying_party::{
    CEREMONY_SECONDS, KeyRecord, PASSKEY_SECRET_PREFIX, RegistrationRequest, credential_id_of,
    new_credential, passkey_secret_kind, relying_party,
};
use crate::state::AppState;
use crate::tokens;

const REGISTRATION: &str = "webauthn_registration";
pub const TOTP_SECRET: &str = "totp";

/// The kinds a new registration may ask for (legacy keys are only imported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewKind {
    SecurityKey,
    DeviceAuthenticator,
}

impl From<NewKind> for CredentialKind {
    fn from(kind: NewKind) -> Self {
        match kind {
            NewKind::SecurityKey => Self::SecurityKey,
            NewKind::DeviceAuthenticator => Self::DeviceAuthenticator,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBegin {
    pub kind: NewKind,
}

/// Pass `options` to `navigator.credentials.create(PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey))`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterBeginBody {
    /// Name it in the finish call; it answers once, within 60 seconds.
    pub ceremony_id: String,
    #[schema(value_type = Object)]
    pub options: CreationChallengeResponse,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    pub ceremony_id: String,
    /// 1 to 64 characters.
    pub label: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create`, as `toJSON()` gives it.
    #[schema(value_type = Object)]
    pub credential: RegisterPublicKeyCredential,
}

#[derive(Serialize, Deserialize)]
struct RegistrationState {
    kind: CredentialKind,
    by: CredentialActor,
    registration: CoreRegistrationState,
}

/// The user's passkey records kept beside the log, by credential id.
pub async fn user_passkeys(
    state: &AppState,
    user_id: Uuid,
) -> Result<Vec<(CredentialId, KeyRecord)>, ApiError> {
    let rows = state
        .log
        .secrets_with_prefix(&user_stream(user_id), PASSKEY_SECRET_PREFIX)
        .await?;
    rows.into_iter()
        .map(|(_, value)| {
            let key: KeyRecord = serde_json::from_str(&value).map_err(ApiError::internal)?;
            Ok((credential_id_of(&key)?, key))
        })
        .collect()
}

pub async fn load_user(state: &AppState, user_id: Uuid) -> Result<User, ApiError> {
    let (user, _) = state
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if user.exists() {
        Ok(user)
    } else {
        Err(ApiError::NotFound("user"))
    }
}

/// Starts a registration for `user`; `by` is recorded when it finishes.
pub async fn begin_registration(
    state: &AppState,
    tenant: &Tenant,
    user: &User,
    kind: NewKind,
    by: CredentialActor,
) -> Result<RegisterBeginBody, ApiError> {
    let rp = relying_party(tenant)?;
    // The reauthentication workflow may limit keys to one attachment.
    let allowed = tenant.webauthn_settings().reauthentication.attachment;
    if matches!(
        (allowed, kind),
        (Attachment::Platform, NewKind::SecurityKey)
            | (Attachment::CrossPlatform, NewKind::DeviceAuthenticator)
    ) {
        return Err(ApiError::Conflict {
            code: "authenticator_attachment_not_allowed",
            detail: format!(
                "this tenant allows only {} authenticators",
                match allowed {
                    Attachment::Platform => "platform (device)",
                    _ => "cross-platform (security key)",
                }
            ),
        });
    }
    let exclude = user_passkeys(state, user.id())
        .await?
        .into_iter()
        .map(|(_, key)| key.cred_id().clone())
        .collect();
    let settings = tenant.webauthn_settings();
    // The kind the user chose steers the browser to the right authenticator. When the
    // tenant allows passwordless login, the key must keep the credential (discoverable), so
    // that it can name the user by itself. A key must verify the user if a workflow it will
    // serve requires that.
    let (options, registration) = rp.start_registration(RegistrationRequest {
        user_id: user.id(),
        user_name: user.username(),
        display_name: user.display_name().unwrap_or(user.username()),
        exclude,
        user_verification: settings.registration_user_verification(),
        attachment: match kind {
            NewKind::SecurityKey => AuthenticatorAttachment::CrossPlatform,
            NewKind::DeviceAuthenticator => AuthenticatorAttachment::Platform,
        },
        discoverable: settings.bootstrap.enabled,
    })?;
    let ceremony_state = RegistrationState {
        kind: kind.into(),
        by,
        registration,
    };
    let ceremony_id = tokens::generate();
    let now = state.clock.now();
    let expires_at = now + Duration::seconds(CEREMONY_SECONDS);
    state
        .ceremonies
        .put(
            &ceremony_id,
            &Ceremony {
                purpose: REGISTRATION.into(),
                tenant_id: tenant.id(),
                user_id: Some(user.id()),
                state: serde_json::to_string(&ceremony_state).map_err(ApiError::internal)?,
            },
            expires_at,
        )
        .await?;
    Ok(RegisterBeginBody {
        ceremony_id,
        options,
        expires_at,
    })
}

/// Verifies the authenticator's answer to a registration begun for `user_id` and records the
/// credential, its id claimed across all users and its public key kept beside the log.
pub async fn finish_registration(
    state: &AppState,
    tenant: &Tenant,
    user_id: Uuid,
    finish: RegisterFinish,
    ctx: &CommandContext,
) -> Result<keyledger_store::Executed<User>, ApiError> {
    let label = CredentialLabel::parse(&finish.label).map_err(|e| ApiError::InvalidValue {
        code: e.code(),
        detail: e.to_string(),
    })?;
    let rp = relying_party(tenant)?;
    let ceremony = state
        .ceremonies
        .take(&finish.ceremony_id, REGISTRATION, ctx.now)
        .await?
        .filter(|c| c.user_id == Some(user_id) && c.tenant_id == tenant.id())
        .ok_or_else(|| {
            tracing::info!(user_id = %user_id, "registration refused: challenge expired, used or unknown");
            ApiError::CeremonyFailed
        })?;
    // A state that does not parse was begun by an older version: it is as good as expired.
    let pending: RegistrationState = serde_json::from_str(&ceremony.state).map_err(|_| {
        tracing::info!(user_id = %user_id, "registration refused: ceremony state from an older version");
        ApiError::CeremonyFailed
    })?;
    let passkey = rp
        .finish_registration(&finish.credential, &pending.registration)
        .map_err(|error| {
            tracing::info!(user_id = %user_id, %error, "registration refused");
            ApiError::CeremonyFailed
        })?;
    let transports = finish
        .credential
        .response
        .transports
        .as_ref()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let credential = new_credential(&passkey, label.into(), pending.kind, transports)?;
    let credential_id = credential.credential_id.clone();
    let record = serde_json::to_string(&passkey).map_err(ApiError::internal)?;
    let command = UserCommand::RegisterWebauthnCredential {
        credential,
        by: pending.by,
        at: ctx.now,
    };
    let executed = state
        .users
        .execute(&user_id.to_string(), command, &(), ctx, |_, _, _| {
            SideWrites {
                claims: vec![ClaimChange::Reserve(credential_claim(&credential_id))],
                secrets: vec![SecretWrite {
                    kind: passkey_secret_kind(&credential_id),
                    value: Some(record.clone()),
                }],
                sessions: Vec::new(),
            }
        })
        .await
        .map_err(user_error)?;
    tracing::info!(user_id = %user_id, credential_id = %credential_id, "WebAuthn credential registered");
    Ok(executed)
}

pub fn credential_claim(credential_id: &CredentialId) -> keyledger_store::ClaimKey {
    keyledger_store::ClaimKey {
        scope: CREDENTIAL_CLAIM_SCOPE.into(),
        kind: CREDENTIAL_CLAIM.into(),
        value: credential_id.as_str().into(),
    }
}

/// The side writes of a removal: the id is free again and the public key is gone.
pub fn removal_writes(credential_id: &CredentialId) -> SideWrites {
    SideWrites {
        claims: vec![ClaimChange::Release(credential_claim(credential_id))],
        secrets: vec![SecretWrite {
            kind: passkey_secret_kind(credential_id),
            value: None,
        }],
        sessions: Vec::new(),
    }
}

/// Tokens are kept only as hashes: a copy of the table holds no usable token.
pub fn token_key(token: &str) -> String {
    hex::encode(tokens::hash(token))
}

/// A TOTP generator (SHA-1, 6 digits, 30 s, one step of skew) for a raw secret.
pub fn totp(secret: Vec<u8>, account: &str, issuer: &str) -> Result<Totp, ApiError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret)
        .with_account_name(account.replace(':', " "))
        .with_issuer(Some(issuer.replace(':', " ")))
        .build()
        .map_err(ApiError::internal)
}

/// The 30-second step a code belongs to, if it is right for the step of `now` or one step
/// either side.
pub fn totp_step(totp: &Totp, code: &str, now: DateTime<Utc>) -> Option<u64> {
    totp.check(code.trim(), u64::try_from(now.timestamp()).ok()?)
}
