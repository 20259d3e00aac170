//! Erasing a user's personal data (the right to erasure) without breaking the hash chain.
//!
//! The user's personal fields are sealed in the log with their data key; erasing destroys the
//! key in the same transaction as `user.erased`, and with it gives up every claim and deletes
//! every secret the user held. Sessions, ceremonies and mail go right after. The events stay
//! (the chain still verifies and the timeline still shows what happened), their personal
//! fields are unreadable for good.

use axum::Json;
use axum::extract::State;
use keyledger_domain::DEFAULT_TENANT_ID;
use keyledger_domain::user::UserCommand;
use keyledger_store::personal::{DATA_KEY_SECRET, ERASED_TOMBSTONE, KeyState};
use keyledger_store::{
    AppendRequest, ClaimChange, ExpectedVersion, SecretWrite, SideWrites, StreamId,
};
use uuid::Uuid;

use super::users::{UserBody, UserWritten};
use crate::commands::{context, user_error};
use crate::error::ApiError;
use crate::extract::{Admin, ApiPath, RequestContext};
use crate::state::AppState;

#[utoipa::path(post, path = "/api/v1/users/{id}/erase",
    params(("id" = Uuid, Path, description = "The user id")),
    responses(
        (status = 200, body = UserWritten, description = "Erased: the user as the log now shows them"),
        (status = 401), (status = 404),
        (status = 409, description = "`erasure_unsupported_legacy`: the user was created before personal data was sealed"),
        (status = 410, description = "`user_erased`: already erased")),
    security(("admin" = [])), tag = "users")]
pub async fn erase_user(
    admin: Admin,
    request: RequestContext,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserWritten>, ApiError> {
    let user_id = id.to_string();
    match state.log.data_key(&user_id).await? {
        Some(KeyState::Live(_)) => {}
        Some(KeyState::Erased) => return Err(ApiError::user_erased()),
        None => {
            let (user, _) = state.users.load(&user_id).await.map_err(user_error)?;
            return Err(if user.exists() {
                ApiError::Conflict {
                    code: "erasure_unsupported_legacy",
                    detail: "this user was created before personal data was sealed in the log; \
                             their events hold it in the clear and cannot be rewritten without \
                             breaking the hash chain"
                        .into(),
                }
            } else {
                ApiError::NotFound("user")
            });
        }
    }
    let stream = StreamId::new("user", user_id.clone());
    let side = forget_everything(&state, &stream).await?;
    let ctx = context(&state, DEFAULT_TENANT_ID, &request, admin.actor);
    let executed = state
        .users
        .execute(
            &user_id,
            UserCommand::Erase { at: ctx.now },
            &(),
            &ctx,
            |_, _, _| side.clone(),
        )
        .await
        .map_err(user_error)?;
    // A claim or secret added while the erasure was being decided (a key registered a moment
    // before) was not in the list above: a second pass, with no event, takes it too.
    let leftover = forget_everything(&state, &stream).await?;
    if !leftover.claims.is_empty() || leftover.secrets.len() > 1 {
        state
            .log
            .append(AppendRequest {
                stream: stream.clone(),
                expected: ExpectedVersion::Any,
                events: Vec::new(),
                claims: leftover.claims,
                secrets: leftover.secrets,
                sessions: Vec::new(),
                decided_on: Vec::new(),
            })
            .await
            .map_err(ApiError::internal)?;
    }
    state.log.forget_user_state(&user_id).await?;
    tracing::info!(user_id = %id, "user erased");
    Ok(Json(UserWritten {
        user: UserBody::from_user(&executed.aggregate, ctx.now),
        position: executed.appended.map(|a| a.last_position),
    }))
}

/// Writes that give up every claim the user holds, delete every secret, and replace the data
/// key with its tombstone.
async fn forget_everything(state: &AppState, stream: &StreamId) -> Result<SideWrites, ApiError> {
    let claims = state
        .log
        .claims_held_by(stream)
        .await?
        .into_iter()
        .map(ClaimChange::Release)
        .collect();
    let mut secrets: Vec<SecretWrite> = state
        .log
        .secrets_with_prefix(stream, "")
        .await?
        .into_iter()
        .filter(|(kind, _)| kind != DATA_KEY_SECRET)
        .map(|(kind, _)| SecretWrite { kind, value: None })
        .collect();
    secrets.push(SecretWrite {
        kind: DATA_KEY_SECRET.into(),
        value: Some(ERASED_TOMBSTONE.into()),
    });
    Ok(SideWrites {
        claims,
        secrets,
        sessions: Vec::new(),
    })
}
