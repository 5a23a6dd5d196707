//! Signed snapshots: with a stage key, `extract` signs the manifest and
//! `load` refuses a snapshot whose signature is missing or wrong.
//!
//! The signature is HMAC-SHA256 of the manifest (serialized without its
//! `signature` field) under the key. The manifest holds the SHA-256 of every
//! chunk and of the accounts object, and those are checked before use, so
//! the signature covers every staged object: a tampered manifest fails the
//! MAC, a swapped chunk fails its SHA-256.
//!
//! HMAC rather than Ed25519: one secret (`REPLSEED_STAGE_KEY` or a key file)
//! that extract and load hosts already hold like their database passwords,
//! no key pairs to mint and distribute, and a check that needs no more than
//! SHA-256. The trade-off: every host that can verify can also sign, so the
//! key must stay off machines that may write to the stage but must not
//! publish snapshots.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::error::StageError;
use crate::manifest::Manifest;

const PREFIX: &str = "hmac-sha256:";

/// A stage key.
#[derive(Clone)]
pub struct StageKey(SecretString);

impl std::fmt::Debug for StageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageKey(***)")
    }
}

impl StageKey {
    /// A key from its text (at least 16 bytes).
    pub fn new(key: SecretString) -> Result<StageKey, String> {
        if key.expose_secret().trim().len() < 16 {
            return Err("the stage key is shorter than 16 characters; use a long random secret (e.g. `openssl rand -hex 32`)".into());
        }
        Ok(StageKey(SecretString::from(
            key.expose_secret().trim().to_string(),
        )))
    }

    /// The MAC of `body` under the key.
    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(body);
        mac
    }

    /// `hmac-sha256:<hex>` of `body`.
    pub(crate) fn tag(&self, body: &[u8]) -> String {
        format!(
            "{PREFIX}{}",
            hex::encode(self.mac(body).finalize().into_bytes())
        )
    }

    /// Checks `signature` (`hmac-sha256:<hex>`) of `body`; `Err` says what
    /// is wrong, for a message naming the object.
    pub(crate) fn check(&self, body: &[u8], signature: Option<&str>) -> Result<(), String> {
        let Some(sig) = signature else {
            return Err("it is not signed".into());
        };
        let tag = sig
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| format!("the signature is not `{PREFIX}<hex>`"))?;
        self.mac(body).verify_slice(&tag).map_err(|_| {
            "the signature does not match: it was changed, or signed with another key".to_string()
        })
    }

    /// Signs a manifest (sets its `signature`).
    pub fn sign(&self, m: &mut Manifest) {
        m.signature = None;
        m.signature = Some(self.tag(&signed_body(m)));
    }

    /// Checks a manifest's signature; the error names the manifest object.
    pub fn verify(&self, m: &Manifest, key: &str) -> Result<(), StageError> {
        self.check(&signed_body(m), m.signature.as_deref())
            .map_err(|reason| StageError::BadSignature {
                key: key.to_string(),
                reason: if m.signature.is_none() {
                    format!("{reason}, and a stage key is set: only signed snapshots load; extract with the same REPLSEED_STAGE_KEY")
                } else {
                    reason
                },
            })
    }
}

/// What a manifest's signature covers: the manifest without its signature.
fn signed_body(m: &Manifest) -> Vec<u8> {
    let mut unsigned = m.clone();
    unsigned.signature = None;
    serde_json::to_vec(&unsigned).expect("manifest serializes")
}
