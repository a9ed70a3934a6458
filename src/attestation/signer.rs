//! Keys for the attestation: an OpenSSH ed25519 private key signs the DSSE envelope (the same
//! key people already hold for git and for plan approvals), and an OpenSSH `allowed_signers`
//! file says which public keys verify trusts. ed25519 only: it is what DSSE verifiers
//! (securesystemslib, sigstore) accept from a raw key, and what `ssh-keygen -t ed25519` makes.
//!
//! A passphrase-protected key is decrypted with `GLOW_SIGNING_KEY_PASSPHRASE`, or a
//! passphrase typed on the terminal.

use crate::error::Error;
use signature::{Signer as _, Verifier};
use ssh_key::{Algorithm, HashAlg, PrivateKey, PublicKey};
use std::path::{Path, PathBuf};

pub const PASSPHRASE_ENV: &str = "GLOW_SIGNING_KEY_PASSPHRASE";

pub struct Signer {
    key: PrivateKey,
    /// `SHA256:...`, the DSSE `keyid`.
    pub keyid: String,
}

fn key_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Signer {
    /// Reads an OpenSSH private key (decrypting it if it has a passphrase).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let key = PrivateKey::read_openssh_file(path).map_err(|e| {
            key_error(
                path,
                format!("not a readable OpenSSH private key (signing key): {e}"),
            )
        })?;
        let key = if key.is_encrypted() {
            let passphrase = passphrase(path)?;
            key.decrypt(passphrase.as_bytes())
                .map_err(|e| key_error(path, format!("cannot decrypt the signing key: {e}")))?
        } else {
            key
        };
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(key_error(
                path,
                format!(
                    "the signing key is {}; attestations are signed with ed25519 (`ssh-keygen -t ed25519`)",
                    key.algorithm()
                ),
            ));
        }
        let keyid = key.fingerprint(HashAlg::Sha256).to_string();
        Ok(Self { key, keyid })
    }

    /// The raw ed25519 signature (64 bytes) over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let signature: ssh_key::Signature = self
            .key
            .try_sign(message)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(signature.as_bytes().to_vec())
    }
}

fn passphrase(path: &Path) -> Result<String, Error> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_ENV) {
        return Ok(passphrase);
    }
    if !console::Term::stderr().is_term() {
        return Err(key_error(
            path,
            format!("the signing key has a passphrase: set {PASSPHRASE_ENV}, or run on a terminal"),
        ));
    }
    dialoguer::Password::new()
        .with_prompt(format!("passphrase for {}", path.display()))
        .interact()
        .map_err(|e| key_error(path, format!("reading the passphrase: {e}")))
}

/// Checks a raw ed25519 signature with an OpenSSH public key.
pub fn verifies(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    ssh_key::Signature::new(Algorithm::Ed25519, signature.to_vec())
        .is_ok_and(|signature| Verifier::verify(key, message, &signature).is_ok())
}

/// One key of an allowed_signers file.
pub struct Allowed {
    pub principals: String,
    pub key: PublicKey,
    pub fingerprint: String,
    pub line: usize,
}

/// An OpenSSH allowed_signers file (`ssh-keygen(1)`, ALLOWED SIGNERS): per line, principals,
/// optional options, a public key. Verify only needs the keys (and names the principals).
pub struct AllowedSigners {
    pub path: PathBuf,
    pub keys: Vec<Allowed>,
}

impl AllowedSigners {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_error(path, format!("cannot read the allowed signers file: {e}")))?;
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            // The key is the first "TYPE BASE64" pair after the principals (options may sit
            // between them).
            let key = (1..words.len().saturating_sub(1)).find_map(|i| {
                PublicKey::from_openssh(&format!("{} {}", words[i], words[i + 1])).ok()
            });
            let Some(key) = key else {
                return Err(key_error(
                    path,
                    format!(
                        "line {}: expected `PRINCIPALS [OPTIONS] KEYTYPE BASE64`, found no public key",
                        index + 1
                    ),
                ));
            };
            keys.push(Allowed {
                principals: words[0].to_owned(),
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
                key,
                line: index + 1,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
        })
    }

    pub fn by_fingerprint(&self, keyid: &str) -> Option<&Allowed> {
        self.keys.iter().find(|k| k.fingerprint == keyid)
    }
}
