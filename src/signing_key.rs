//! The approver's key for `glow-run approve`: an OpenSSH private key file (an encrypted one is
//! asked for its passphrase at the terminal, never from the environment or a flag), or, when
//! `--key` names a public key (`*.pub`), the matching key held by ssh-agent (`SSH_AUTH_SOCK`),
//! so the private key never leaves the agent.
//!
//! The agent speaks the ssh-agent protocol (draft-miller-ssh-agent): one SIGN_REQUEST for the
//! SSHSIG "signed data" blob, the same bytes `ssh-keygen -Y sign` hands its agent.

use crate::approval::NAMESPACE;
use ssh_key::public::KeyData;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, Signature, SshSig};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;
const SSH_AGENT_RSA_SHA2_512: u32 = 4;
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

pub enum SigningKey {
    File(Box<PrivateKey>),
    Agent { socket: PathBuf, key: PublicKey },
}

/// `--key`, else `GLOW_SIGNING_KEY`, else `~/.ssh/id_ed25519`.
pub fn default_path(given: Option<&Path>) -> PathBuf {
    if let Some(path) = given {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os("GLOW_SIGNING_KEY").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".ssh/id_ed25519")
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
        if path.extension().is_some_and(|e| e == "pub") || text.trim_start().starts_with("ssh-") {
            let key = PublicKey::from_openssh(text.trim())
                .map_err(|e| format!("{} is not an OpenSSH public key: {e}", path.display()))?;
            let socket = std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{} is a public key, so its private half is expected in ssh-agent, but SSH_AUTH_SOCK is not set (start ssh-agent and ssh-add the key, or give the private key file)",
                        path.display()
                    )
                })?;
            return Ok(Self::Agent {
                socket: PathBuf::from(socket),
                key,
            });
        }
        let key = PrivateKey::from_openssh(text.as_bytes())
            .map_err(|e| format!("{} is not an OpenSSH private key: {e}", path.display()))?;
        if !key.is_encrypted() {
            return Ok(Self::File(Box::new(key)));
        }
        let passphrase = ask_passphrase(path)?;
        let key = key
            .decrypt(passphrase.as_bytes())
            .map_err(|_| format!("wrong passphrase for {}", path.display()))?;
        Ok(Self::File(Box::new(key)))
    }

    pub fn public(&self) -> KeyData {
        match self {
            Self::File(key) => key.public_key().key_data().clone(),
            Self::Agent { key, .. } => key.key_data().clone(),
        }
    }

    /// Signs the plan hash; returns the armored SSHSIG.
    pub fn sign(&self, plan_hash: &str) -> Result<String, String> {
        match self {
            Self::File(key) => crate::approval::sign(key, plan_hash),
            Self::Agent { socket, key } => {
                let data = SshSig::signed_data(NAMESPACE, HashAlg::Sha512, plan_hash.as_bytes())
                    .map_err(|e| format!("signing: {e}"))?;
                let blob = agent_sign(socket, key, &data)?;
                let signature = Signature::try_from(blob.as_slice())
                    .map_err(|e| format!("ssh-agent answered an unreadable signature: {e}"))?;
                let sshsig = SshSig::new(
                    key.key_data().clone(),
                    NAMESPACE,
                    HashAlg::Sha512,
                    signature,
                )
                .map_err(|e| format!("signing: {e}"))?;
                sshsig
                    .to_pem(LineEnding::LF)
                    .map_err(|e| format!("encoding the signature: {e}"))
            }
        }
    }
}

/// Asks for the key's passphrase at the controlling terminal (no echo).
fn ask_passphrase(path: &Path) -> Result<String, String> {
    let no_terminal = || {
        format!(
            "{} is encrypted and there is no terminal to ask for its passphrase; run glow-run approve at a terminal, or add the key to ssh-agent and pass --key {}.pub",
            path.display(),
            path.display()
        )
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| no_terminal())?;
    if !nix::unistd::isatty(&tty).unwrap_or(false) {
        return Err(no_terminal());
    }
    let reader = tty.try_clone().map_err(|e| e.to_string())?;
    let term = console::Term::read_write_pair(reader, tty);
    dialoguer::Password::new()
        .with_prompt(format!("Passphrase for {}", path.display()))
        .interact_on(&term)
        .map_err(|e| format!("reading the passphrase: {e}"))
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// One SIGN_REQUEST to the agent; returns the signature blob.
fn agent_sign(socket: &Path, key: &PublicKey, data: &[u8]) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("ssh-agent at {}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(fail)?;
    stream.set_read_timeout(Some(AGENT_TIMEOUT)).map_err(fail)?;
    stream
        .set_write_timeout(Some(AGENT_TIMEOUT))
        .map_err(fail)?;
    let blob = key
        .to_bytes()
        .map_err(|e| format!("encoding the public key: {e}"))?;
    let mut body = vec![SSH_AGENTC_SIGN_REQUEST];
    put_string(&mut body, &blob);
    put_string(&mut body, data);
    let flags = if key.algorithm().is_rsa() {
        SSH_AGENT_RSA_SHA2_512
    } else {
        0
    };
    body.extend_from_slice(&flags.to_be_bytes());
    let mut message = Vec::with_capacity(body.len() + 4);
    put_string(&mut message, &body);
    stream.write_all(&message).map_err(fail)?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).map_err(fail)?;
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > 1 << 20 {
        return Err(format!(
            "ssh-agent at {} answered a bad length",
            socket.display()
        ));
    }
    let mut reply = vec![0u8; length];
    stream.read_exact(&mut reply).map_err(fail)?;
    if reply[0] != SSH_AGENT_SIGN_RESPONSE {
        return Err(format!(
            "ssh-agent refused to sign with {} (is it added? `ssh-add -l` lists the agent's keys)",
            key.fingerprint(HashAlg::Sha256)
        ));
    }
    let inner = reply.get(5..).ok_or("ssh-agent answered a short reply")?;
    let declared = reply
        .get(1..5)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0);
    inner
        .get(..declared)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "ssh-agent answered a truncated signature".to_owned())
}
