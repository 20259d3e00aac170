//! Authenticators for tests: webauthn-authenticator-rs's software passkey, driven with the
//! JSON the API sends, answering with the JSON a browser would; and TOTP codes.

use serde_json::Value;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs_proto::{CreationChallengeResponse, RequestChallengeResponse};

/// A software authenticator holding its credentials in memory.
pub struct SoftKey {
    inner: SoftPasskey,
}

impl Default for SoftKey {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftKey {
    /// With user verification, as passkeys need.
    pub fn new() -> Self {
        Self {
            inner: SoftPasskey::new(true),
        }
    }

    /// Without user verification: a key with no PIN or biometric, which only shows presence.
    pub fn without_user_verification() -> Self {
        Self {
            inner: SoftPasskey::new(false),
        }
    }

    /// Answers `options` (the API's `options`, i.e. `{"publicKey": ..}`) as if the page at
    /// `origin` called `navigator.credentials.create`.
    pub fn register(&mut self, origin: &str, options: &Value) -> Value {
        let options: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let url = url::Url::parse(origin).unwrap();
        let credential = self.inner.do_registration(url, options).unwrap();
        serde_json::to_value(credential).unwrap()
    }

    /// Answers `options` as if the page at `origin` called `navigator.credentials.get`.
    pub fn assert(&mut self, origin: &str, options: &Value) -> Value {
        let options: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
        let url = url::Url::parse(origin).unwrap();
        let credential = self.inner.do_authentication(url, options).unwrap();
        serde_json::to_value(credential).unwrap()
    }
}

/// The TOTP code for a base32 secret at `unix` seconds.
pub fn totp_code(secret_base32: &str, unix: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_base32).unwrap();
    totp_rs::Builder::new()
        .with_secret(secret)
        .build_noncompliant()
        .generate(unix)
        .to_string()
}
