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

    fn mac(&self, m: &Manifest) -> Hmac<Sha256> {
        let mut unsigned = m.clone();
        unsigned.signature = None;
        let body = serde_json::to_vec(&unsigned).expect("manifest serializes");
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(&body);
        mac
    }

    /// Signs a manifest (sets its `signature`).
    pub fn sign(&self, m: &mut Manifest) {
        let tag = self.mac(m).finalize().into_bytes();
        m.signature = Some(format!("{PREFIX}{}", hex::encode(tag)));
    }

    /// Checks a manifest's signature; the error names the manifest object.
    pub fn verify(&self, m: &Manifest, key: &str) -> Result<(), StageError> {
        let Some(sig) = &m.signature else {
            return Err(StageError::BadSignature {
                key: key.to_string(),
                reason: "it is not signed, and a stage key is set: only signed snapshots load; extract with the same REPLSEED_STAGE_KEY".into(),
            });
        };
        let tag = sig
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| StageError::BadSignature {
                key: key.to_string(),
                reason: format!("the signature is not `{PREFIX}<hex>`"),
            })?;
        self.mac(m).verify_slice(&tag).map_err(|_| StageError::BadSignature {
            key: key.to_string(),
            reason: "the signature does not match: the manifest was changed, or signed with another key".into(),
        })
    }
}
