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

/// A U2F key as a U2F server knew it: a P-256 key pair and a key handle. It answers WebAuthn
/// assertion options as a browser would with such a key: authenticator data (rpIdHash, the
/// user-present flag, the counter) and an ECDSA signature over it and the client data's hash,
/// made with the p256 crate.
pub struct U2fKey {
    signing: p256::ecdsa::SigningKey,
    pub handle: Vec<u8>,
    counter: u32,
}

/// Unpadded base64url, as WebAuthn's JSON carries binary values.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

impl U2fKey {
    /// A key from a fixed secret (tests need no randomness), with `counter` uses behind it.
    pub fn new(seed: u8, counter: u32) -> Self {
        let mut secret = [seed; 32];
        secret[0] = 0x11;
        Self {
            signing: p256::ecdsa::SigningKey::from_slice(&secret).unwrap(),
            handle: (0..64)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i))
                .collect(),
            counter,
        }
    }

    pub fn key_handle(&self) -> String {
        b64(&self.handle)
    }

    /// The uncompressed point `0x04 || X || Y`, base64url: what a U2F server stores.
    pub fn public_key(&self) -> String {
        let point = self.signing.verifying_key().to_sec1_point(false);
        b64(point.as_bytes())
    }

    /// Answers `options` for the page at `origin`. With `appid`, the key signs for that
    /// AppID (as U2F keys registered under one do) and the client reports the extension used.
    pub fn assert(&mut self, origin: &str, options: &Value, appid: Option<&str>) -> Value {
        use p256::ecdsa::signature::Signer;
        let public_key = &options["publicKey"];
        let rp_id = public_key["rpId"].as_str().unwrap();
        self.counter += 1;
        let mut authenticator_data = sha256(appid.unwrap_or(rp_id).as_bytes());
        authenticator_data.push(0x01);
        authenticator_data.extend_from_slice(&self.counter.to_be_bytes());
        let client_data = serde_json::json!({
            "type": "webauthn.get",
            "challenge": public_key["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        let mut signed = authenticator_data.clone();
        signed.extend_from_slice(&sha256(client_data.as_bytes()));
        let signature: p256::ecdsa::Signature = self.signing.sign(&signed);
        let extensions = match appid {
            Some(_) => serde_json::json!({"appid": true}),
            None => serde_json::json!({}),
        };
        serde_json::json!({
            "id": self.key_handle(),
            "rawId": self.key_handle(),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&authenticator_data),
                "clientDataJSON": b64(client_data.as_bytes()),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": null,
            },
            "extensions": extensions,
        })
    }

    /// Forgets uses, as a cloned key would.
    pub fn set_counter(&mut self, counter: u32) {
        self.counter = counter;
    }
}
