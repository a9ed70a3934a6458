//! The attestation a bundle carries (`attestation.json`): a DSSE envelope holding an in-toto
//! Statement v1 whose subjects are the run's journal, report and artifacts, and whose predicate
//! is SLSA Provenance v1. Standard formats on purpose: a change board's tooling (in-toto,
//! securesystemslib, sigstore's libraries) reads and verifies it without knowing glow-run.
//!
//! - `buildType` [`BUILD_TYPE`] says how to read the predicate: `externalParameters` holds the
//!   script, the mode, the vars and the approvals (as the journal recorded them, so redacted);
//!   `resolvedDependencies` the script and every module with their SHA-256 and, when the run was
//!   bound to a saved plan, the plan (`name: "plan"`, digest its hash); `runDetails.metadata`
//!   `invocationId` the run id, `startedOn`/`finishedOn` the times of `run_start`/`run_end`.
//! - The journal's subject is annotated with its last `seq` and that line's SHA-256, so verify
//!   can say which end of a journal changed; every other line is pinned by the hash chain.
//! - Everything comes from the journal, which is redacted as it is written: the attestation can
//!   hold no secret the journal does not.
//!
//! Signing and keys live in `attestation/signer.rs`.

pub mod signer;

use crate::event::{Body, Event, RunStart};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub use signer::{AllowedSigners, Signer};

pub const FILE_NAME: &str = "attestation.json";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What kind of build the predicate describes: one glow-run run of a runbook (README,
/// "Evidence"). Stable: a new version gets a new URI.
pub const BUILD_TYPE: &str = "urn:glow-run:build-type:runbook-run:v1";
pub const BUILDER_ID: &str = "urn:glow-run:builder";
/// Subject name of the journal; artifacts are named `artifacts/NAME`.
pub const JOURNAL: &str = "journal.jsonl";

/// A DSSE envelope (https://github.com/secure-systems-lab/dsse, protocol v1).
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 (standard alphabet, padded) of the payload bytes.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The key's OpenSSH fingerprint, `SHA256:...`.
    pub keyid: String,
    /// Base64 of the raw ed25519 signature over [`pae`].
    pub sig: String,
}

/// An in-toto ResourceDescriptor: a subject or a dependency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

impl Resource {
    pub fn sha256(name: impl Into<String>, sha256: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            digest: BTreeMap::from([("sha256".to_owned(), sha256.into())]),
            annotations: None,
        }
    }

    pub fn sha256_digest(&self) -> Option<&str> {
        self.digest.get("sha256").map(String::as_str)
    }
}

/// An in-toto Statement v1; the predicate is kept as JSON when read back.
#[derive(Debug, Serialize, Deserialize)]
pub struct Statement<P = Value> {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Resource>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: P,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    build_definition: BuildDefinition,
    run_details: RunDetails,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition {
    build_type: &'static str,
    external_parameters: ExternalParameters,
    resolved_dependencies: Vec<Resource>,
}

#[derive(Debug, Serialize)]
struct ExternalParameters {
    script: Value,
    mode: Value,
    vars: Value,
    approvals: Vec<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunDetails {
    builder: Builder,
    metadata: Metadata,
}

#[derive(Debug, Serialize)]
struct Builder {
    id: &'static str,
    version: BTreeMap<&'static str, &'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    invocation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_on: Option<String>,
}

/// What the run was made from: its script, every module it imported and the saved plan it
/// applied, each with its SHA-256.
fn dependencies(start: &RunStart) -> Vec<Resource> {
    let mut dependencies = Vec::new();
    dependencies.push(Resource::sha256(&start.script, &start.sha256));
    let modules = start.extra.get("modules").and_then(Value::as_array);
    for module in modules.into_iter().flatten() {
        if let (Some(name), Some(sha256)) = (module["name"].as_str(), module["sha256"].as_str()) {
            dependencies.push(Resource::sha256(name, sha256));
        }
    }
    let plan = start
        .extra
        .get("plan_hash")
        .and_then(Value::as_str)
        .or_else(|| {
            start
                .extra
                .get("plan")
                .and_then(|plan| plan["hash"].as_str())
        });
    if let Some(hash) = plan {
        dependencies.push(Resource::sha256("plan", hash));
    }
    dependencies
}

/// The SLSA provenance of a run, read from its journal's events.
pub fn provenance(run_id: &str, events: &[Event]) -> Provenance {
    let start = events.iter().find_map(|event| match &event.body {
        Body::RunStart(start) => Some((event, start)),
        _ => None,
    });
    let end = events
        .iter()
        .rev()
        .find(|event| matches!(event.body, Body::RunEnd(_)));
    let dependencies = start
        .map(|(_, start)| dependencies(start))
        .unwrap_or_default();
    // Each approval as journaled, with its time and its place in the journal.
    let approvals = events
        .iter()
        .filter_map(|event| match &event.body {
            Body::Approval(approval) => {
                let mut fields = serde_json::Map::new();
                fields.insert("time".into(), json!(event.time));
                if let Ok(Value::Object(body)) = serde_json::to_value(approval) {
                    fields.extend(body);
                }
                fields.insert("journal_seq".into(), json!(event.seq));
                Some(Value::Object(fields))
            }
            _ => None,
        })
        .collect();
    Provenance {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE,
            external_parameters: ExternalParameters {
                script: start.map_or(Value::Null, |(_, s)| json!(s.script)),
                mode: start.map_or(Value::Null, |(_, s)| json!(s.mode)),
                vars: start.map_or_else(|| json!({}), |(_, s)| json!(s.vars)),
                approvals,
            },
            resolved_dependencies: dependencies,
        },
        run_details: RunDetails {
            builder: Builder {
                id: BUILDER_ID,
                version: BTreeMap::from([("glow-run", env!("CARGO_PKG_VERSION"))]),
            },
            metadata: Metadata {
                invocation_id: run_id.to_owned(),
                started_on: start.map(|(event, _)| event.time.clone()),
                finished_on: end.map(|event| event.time.clone()),
            },
        },
    }
}

/// DSSE's pre-authentication encoding: what a signature covers.
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Wraps a statement in an envelope, signed when a key is given.
pub fn envelope(
    statement: &Statement<Provenance>,
    signer: Option<&Signer>,
) -> Result<Envelope, String> {
    let payload = serde_json::to_vec(statement).map_err(|e| e.to_string())?;
    let signatures = match signer {
        Some(signer) => vec![EnvelopeSignature {
            keyid: signer.keyid.clone(),
            sig: STANDARD.encode(signer.sign(&pae(PAYLOAD_TYPE, &payload))?),
        }],
        None => Vec::new(),
    };
    Ok(Envelope {
        payload_type: PAYLOAD_TYPE.to_owned(),
        payload: STANDARD.encode(payload),
        signatures,
    })
}

impl Envelope {
    /// The payload's bytes, and the statement in it.
    pub fn open(&self) -> Result<(Vec<u8>, Statement), String> {
        if self.payload_type != PAYLOAD_TYPE {
            return Err(format!(
                "payloadType is \"{}\", not \"{PAYLOAD_TYPE}\"",
                self.payload_type
            ));
        }
        let payload = STANDARD
            .decode(&self.payload)
            .map_err(|e| format!("the payload is not base64: {e}"))?;
        let statement: Statement = serde_json::from_slice(&payload)
            .map_err(|e| format!("the payload is not an in-toto Statement: {e}"))?;
        if statement.statement_type != STATEMENT_TYPE {
            return Err(format!(
                "_type is \"{}\", not \"{STATEMENT_TYPE}\"",
                statement.statement_type
            ));
        }
        Ok((payload, statement))
    }
}
