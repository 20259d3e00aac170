//! The user's second factors: WebAuthn credentials, TOTP and the MFA requirement. What the
//! aggregate decides here is bookkeeping the ceremonies cannot do: uniqueness on the account,
//! who may rename what, the lockout warning, sign counts and TOTP steps that must only grow.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::{User, UserError};
use super::commands::SecondFactorProof;
use super::events::{
    LoginMethod, LoginSucceeded, MfaFailed, MfaFailureReason, MfaMethod, NewCredential, TotpAdded,
    TotpRemoved, TotpUsed, UserEvent, WebauthnRegistered, WebauthnRemoved, WebauthnRenamed,
    WebauthnUsed,
};
use crate::mfa::{CredentialActor, CredentialId, CredentialKind, CredentialLabel, MfaRequirement};

/// A registered WebAuthn credential as its events left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WebauthnCredential {
    pub credential_id: CredentialId,
    pub label: String,
    pub kind: CredentialKind,
    pub aaguid: Uuid,
    pub authenticator_name: Option<String>,
    pub transports: Vec<String>,
    pub user_verified: bool,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub sign_count: u32,
    pub registered_by: CredentialActor,
    pub registered_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// An active TOTP enrollment. The secret is never here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TotpState {
    pub added_at: DateTime<Utc>,
    /// The latest time step accepted; a code of this step or an earlier one is refused.
    pub last_step: u64,
}

/// The second-factor part of a user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecondFactors {
    /// By credential id: ordered, so anything derived from it is deterministic.
    pub credentials: BTreeMap<CredentialId, WebauthnCredential>,
    pub totp: Option<TotpState>,
    /// `None`: the tenant's requirement applies.
    pub requirement: Option<MfaRequirement>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl SecondFactors {
    pub fn any(&self) -> bool {
        !self.credentials.is_empty() || self.totp.is_some()
    }

    fn count(&self) -> usize {
        self.credentials.len() + usize::from(self.totp.is_some())
    }

    pub fn effective_requirement(&self, tenant: MfaRequirement) -> MfaRequirement {
        self.requirement.unwrap_or(tenant)
    }

    /// Whether removing one factor now needs the remover's confirmation.
    fn removal_needs_confirmation(&self, tenant: MfaRequirement) -> bool {
        self.count() == 1 && self.effective_requirement(tenant) == MfaRequirement::Required
    }

    pub(super) fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::WebauthnRegistered(e) => {
                let c = &e.credential;
                self.credentials.insert(
                    c.credential_id.clone(),
                    WebauthnCredential {
                        credential_id: c.credential_id.clone(),
                        label: c.label.clone(),
                        kind: c.kind,
                        aaguid: c.aaguid,
                        authenticator_name: c.authenticator_name.clone(),
                        transports: c.transports.clone(),
                        user_verified: c.user_verified,
                        backup_eligible: c.backup_eligible,
                        backed_up: c.backed_up,
                        sign_count: c.sign_count,
                        registered_by: e.registered_by.clone(),
                        registered_at: e.at,
                        last_used_at: None,
                    },
                );
            }
            UserEvent::WebauthnRenamed(e) => {
                if let Some(c) = self.credentials.get_mut(&e.credential_id) {
                    c.label = e.new_label.clone();
                }
            }
            UserEvent::WebauthnRemoved(e) => {
                self.credentials.remove(&e.credential_id);
            }
            UserEvent::WebauthnUsed(e) => {
                if let Some(c) = self.credentials.get_mut(&e.credential_id) {
                    c.sign_count = e.sign_count;
                    c.backed_up = e.backed_up;
                    c.last_used_at = Some(e.at);
                }
                self.last_used_at = Some(e.at);
            }
            UserEvent::TotpAdded(e) => {
                self.totp = Some(TotpState {
                    added_at: e.at,
                    last_step: e.step,
                });
            }
            UserEvent::TotpRemoved(_) => self.totp = None,
            UserEvent::TotpUsed(e) => {
                if let Some(totp) = self.totp.as_mut() {
                    totp.last_step = e.step;
                }
                self.last_used_at = Some(e.at);
            }
            UserEvent::MfaRequirementChanged(e) => self.requirement = e.requirement,
            _ => {}
        }
    }
}

/// A sign count must grow, except that authenticators which keep none report 0 every time.
fn sign_count_regressed(stored: u32, presented: u32) -> bool {
    (stored != 0 || presented != 0) && presented <= stored
}

impl User {
    pub(super) async fn register_credential(
        &mut self,
        credential: NewCredential,
        by: CredentialActor,
        imported: bool,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if (credential.kind == CredentialKind::Legacy) != imported {
            return Err(UserError::LegacyRegistrationRefused);
        }
        if self
            .second_factors
            .credentials
            .contains_key(&credential.credential_id)
        {
            return Err(UserError::CredentialAlreadyRegistered);
        }
        let registered = WebauthnRegistered {
            credential,
            registered_by: by,
            at,
        };
        sink.write(UserEvent::WebauthnRegistered(registered), self)
            .await;
        Ok(())
    }

    pub(super) async fn rename_credential(
        &mut self,
        credential_id: CredentialId,
        label: CredentialLabel,
        by: CredentialActor,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let credential = self
            .second_factors
            .credentials
            .get(&credential_id)
            .ok_or(UserError::CredentialNotFound)?;
        if !by.is_admin() && credential.registered_by.is_admin() {
            return Err(UserError::CredentialRegisteredByAdmin);
        }
        if credential.label == label.as_str() {
            return Ok(());
        }
        let renamed = WebauthnRenamed {
            credential_id,
            old_label: credential.label.clone(),
            new_label: label.into(),
            by,
            at,
        };
        sink.write(UserEvent::WebauthnRenamed(renamed), self).await;
        Ok(())
    }

    pub(super) async fn remove_credential(
        &mut self,
        credential_id: CredentialId,
        by: CredentialActor,
        confirm_lockout: bool,
        tenant_mfa: MfaRequirement,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let credential = self
            .second_factors
            .credentials
            .get(&credential_id)
            .ok_or(UserError::CredentialNotFound)?;
        let warned = self.second_factors.removal_needs_confirmation(tenant_mfa);
        if warned && !confirm_lockout {
            return Err(UserError::LastFactorRemovalUnconfirmed);
        }
        let removed = WebauthnRemoved {
            credential_id,
            label: credential.label.clone(),
            kind: credential.kind,
            by,
            lockout_warning_overridden: warned,
            at,
        };
        sink.write(UserEvent::WebauthnRemoved(removed), self).await;
        Ok(())
    }

    pub(super) async fn add_totp(
        &mut self,
        step: u64,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.second_factors.totp.is_some() {
            return Err(UserError::TotpAlreadyEnrolled);
        }
        sink.write(UserEvent::TotpAdded(TotpAdded { step, at }), self)
            .await;
        Ok(())
    }

    pub(super) async fn remove_totp(
        &mut self,
        by: CredentialActor,
        confirm_lockout: bool,
        tenant_mfa: MfaRequirement,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.second_factors.totp.is_none() {
            return Err(UserError::TotpNotEnrolled);
        }
        let warned = self.second_factors.removal_needs_confirmation(tenant_mfa);
        if warned && !confirm_lockout {
            return Err(UserError::LastFactorRemovalUnconfirmed);
        }
        let removed = TotpRemoved {
            by,
            lockout_warning_overridden: warned,
            at,
        };
        sink.write(UserEvent::TotpRemoved(removed), self).await;
        Ok(())
    }

    /// Records a verified factor, or the refusal when its counter or step went backwards;
    /// completes the named login when the factor is accepted.
    pub(super) async fn use_second_factor(
        &mut self,
        proof: SecondFactorProof,
        login: Option<(Uuid, LoginMethod)>,
        at: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let refusal = match &proof {
            SecondFactorProof::Webauthn {
                credential_id,
                sign_count,
                ..
            } => match self.second_factors.credentials.get(credential_id) {
                None => Some((MfaMethod::Webauthn, MfaFailureReason::UnknownCredential)),
                Some(c) if sign_count_regressed(c.sign_count, *sign_count) => {
                    Some((MfaMethod::Webauthn, MfaFailureReason::SignCountRegressed))
                }
                Some(_) => None,
            },
            SecondFactorProof::Totp { step } => match &self.second_factors.totp {
                None => return Err(UserError::TotpNotEnrolled),
                Some(totp) if *step <= totp.last_step => {
                    Some((MfaMethod::Totp, MfaFailureReason::TotpCodeReused))
                }
                Some(_) => None,
            },
        };
        if let Some((method, reason)) = refusal {
            let credential_id = match proof {
                SecondFactorProof::Webauthn { credential_id, .. } => Some(credential_id),
                SecondFactorProof::Totp { .. } => None,
            };
            let failed = MfaFailed {
                attempt_id: login.map(|(id, _)| id),
                method,
                reason,
                credential_id,
                at,
            };
            sink.write(UserEvent::MfaFailed(failed), self).await;
            return Ok(());
        }
        let used = match proof {
            SecondFactorProof::Webauthn {
                credential_id,
                sign_count,
                user_verified,
                backed_up,
            } => UserEvent::WebauthnUsed(WebauthnUsed {
                credential_id,
                sign_count,
                user_verified,
                backed_up,
                at,
            }),
            SecondFactorProof::Totp { step } => UserEvent::TotpUsed(TotpUsed { step, at }),
        };
        sink.write(used, self).await;
        if let Some((attempt_id, method)) = login {
            let succeeded = LoginSucceeded {
                attempt_id,
                method,
                at,
            };
            sink.write(UserEvent::LoginSucceeded(succeeded), self).await;
        }
        Ok(())
    }
}
