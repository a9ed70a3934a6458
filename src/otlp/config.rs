//! Where a run's trace goes: the standard OpenTelemetry variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT`) or `--otlp URL`, read from `--env-file` first and then the
//! process environment, resolved once so the journal and the report can say where the trace
//! went. A malformed value is a configuration error (exit 2), naming the variable.

use crate::error::Error;
use std::time::Duration;

/// How long the end of a run waits for the collector, unless `OTEL_EXPORTER_OTLP_TIMEOUT` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    /// The full OTLP/HTTP traces URL (`.../v1/traces`).
    pub endpoint: String,
    /// Extra request headers (an API key, say): every value is registered as a secret.
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    pub timeout: Duration,
}

/// Appends the signal path to a base endpoint, as the OTLP exporter specification says.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

fn check_url(what: &str, url: &str) -> Result<(), Error> {
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(parsed) => Err(Error::usage(format!(
            "{what}: the OTLP endpoint must be an http:// or https:// URL, got scheme '{}'",
            parsed.scheme()
        ))),
        Err(e) => Err(Error::usage(format!(
            "{what}: invalid OTLP endpoint URL: {e}"
        ))),
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (the W3C baggage format the spec uses).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, Error> {
    let mut headers = Vec::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::usage(
                "OTEL_EXPORTER_OTLP_HEADERS: expected key=value pairs separated by commas",
            ));
        };
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8_lossy()
            .into_owned();
        headers.push((key.trim().to_owned(), value));
    }
    Ok(headers)
}

impl Config {
    /// `flag` is `--otlp URL` (a base endpoint, like `OTEL_EXPORTER_OTLP_ENDPOINT`); `lookup`
    /// reads a variable. `None` when nothing asks for an export.
    pub fn resolve(
        flag: Option<&str>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, Error> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let endpoint = if let Some(url) = flag {
            check_url("--otlp", url)?;
            if url.trim_end_matches('/').ends_with("/v1/traces") {
                url.to_owned()
            } else {
                traces_url(url)
            }
        } else if let Some(url) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url)?;
            url
        } else if let Some(url) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            check_url("OTEL_EXPORTER_OTLP_ENDPOINT", &url)?;
            traces_url(&url)
        } else {
            return Ok(None);
        };
        let mut headers = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(text) = get(name) {
                headers.extend(parse_headers(&text)?);
            }
        }
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            None => DEFAULT_TIMEOUT,
            Some(ms) => Duration::from_millis(ms.trim().parse().map_err(|_| {
                Error::usage(format!(
                    "OTEL_EXPORTER_OTLP_TIMEOUT: expected milliseconds, got '{ms}'"
                ))
            })?),
        };
        Ok(Some(Self {
            endpoint,
            headers,
            service_name: get("OTEL_SERVICE_NAME").unwrap_or_else(|| "glow-run".into()),
            timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(vars: &[(&str, &str)], flag: Option<&str>) -> Result<Option<Config>, Error> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(flag, &|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn endpoints_follow_the_specification() {
        assert!(resolve(&[], None).unwrap().is_none());
        let base = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")], None);
        assert_eq!(base.unwrap().unwrap().endpoint, "http://c:4318/v1/traces");
        let traces = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://wrong"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/custom"),
            ],
            None,
        );
        assert_eq!(traces.unwrap().unwrap().endpoint, "http://c/custom");
        let flag = resolve(&[], Some("http://flag:4318")).unwrap().unwrap();
        assert_eq!(flag.endpoint, "http://flag:4318/v1/traces");
        assert_eq!(flag.service_name, "glow-run");
        assert_eq!(flag.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn headers_and_bad_values() {
        let config = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%2Cb, x-team = ops"),
                ("OTEL_SERVICE_NAME", "release"),
            ],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            config.headers,
            vec![
                ("api-key".to_owned(), "a,b".to_owned()),
                ("x-team".to_owned(), "ops".to_owned())
            ]
        );
        assert_eq!(config.service_name, "release");
        assert!(resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c")], None).is_err());
        assert!(resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")], None).is_err());
        assert!(
            resolve(
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")
                ],
                None
            )
            .is_err()
        );
    }
}
