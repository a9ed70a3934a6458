//! Chrome's documented installability criteria, checked from the web app manifest and the
//! service worker registration: what `page.installability()` falls back to when the browser
//! cannot answer `Page.getInstallabilityErrors` (an experimental CDP method), and what
//! `page.installability(#{ criteria: true })` uses on purpose. Errors have Chrome's ids and
//! shape (`{ errorId, errorArguments: [{ name, value }] }`), so scripts read both the same way.
//!
//! The criteria (web.dev "What does it take to be installable?", Chrome's
//! `InstallableManager`): a manifest with `name` or `short_name`, a valid `start_url` on the
//! manifest's origin, `display` (or a `display_override` entry) of `fullscreen`, `standalone`,
//! `minimal-ui` or `window-controls-overlay`, and an icon of at least 144x144 px (PNG, SVG or
//! WebP, purpose `any`); served from a secure context; and, for older Chrome and for offline
//! use, a registered service worker. Chrome also downloads the icon; this check only reads the
//! manifest.

use serde_json::{Value, json};

/// The smallest icon Chrome accepts, in pixels.
const MIN_ICON: u64 = 144;
const DISPLAY_MODES: [&str; 4] = [
    "fullscreen",
    "standalone",
    "minimal-ui",
    "window-controls-overlay",
];

fn error(id: &str, arguments: &[(&str, String)]) -> Value {
    let arguments: Vec<Value> = arguments
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    json!({ "errorId": id, "errorArguments": arguments })
}

/// Whether one manifest icon would do: big enough, an image type Chrome renders, purpose any.
fn suitable_icon(icon: &Value) -> bool {
    let purpose = icon["purpose"].as_str().unwrap_or("any");
    if !purpose.split_whitespace().any(|p| p == "any") {
        return false;
    }
    let src = icon["src"].as_str().unwrap_or("").to_ascii_lowercase();
    let kind = icon["type"].as_str().unwrap_or("").to_ascii_lowercase();
    let image = ["image/png", "image/svg+xml", "image/webp"].contains(&kind.as_str())
        || (kind.is_empty() && [".png", ".svg", ".webp"].iter().any(|e| src.ends_with(e)));
    let big = icon["sizes"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .any(|size| {
            size.eq_ignore_ascii_case("any")
                || size
                    .to_ascii_lowercase()
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse::<u64>().ok()?, h.parse::<u64>().ok()?)))
                    .is_some_and(|(w, h)| w >= MIN_ICON && h >= MIN_ICON)
        });
    image && big
}

/// The installability errors of a page: `manifest` is the `Page.getAppManifest` result,
/// `secure` whether the page is a secure context, `service_worker` whether one is registered.
pub fn check(manifest: &Value, secure: bool, service_worker: bool) -> Vec<Value> {
    let mut errors = Vec::new();
    if !secure {
        errors.push(error("not-from-secure-origin", &[]));
    }
    let url = manifest["url"].as_str().unwrap_or("");
    let data = manifest["data"].as_str().unwrap_or("").trim();
    if url.is_empty() {
        errors.push(error("no-manifest", &[]));
        return errors;
    }
    let Ok(parsed) = serde_json::from_str::<Value>(data) else {
        errors.push(error("manifest-empty", &[]));
        return errors;
    };
    let text = |key: &str| parsed[key].as_str().map(str::trim).unwrap_or("");
    if text("name").is_empty() && text("short_name").is_empty() {
        errors.push(error("manifest-missing-name-or-short-name", &[]));
    }
    let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
    let start = url::Url::parse(url)
        .ok()
        .and_then(|base| base.join(text("start_url")).ok());
    if start.is_none_or(|start| Some(start.origin()) != origin(url)) {
        errors.push(error("start-url-not-valid", &[]));
    }
    let overrides = parsed["display_override"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let displayable = DISPLAY_MODES.contains(&text("display"))
        || overrides
            .iter()
            .any(|mode| DISPLAY_MODES.contains(&mode.as_str().unwrap_or("")));
    if !displayable {
        errors.push(error(
            "manifest-display-not-supported",
            &[("display", text("display").to_owned())],
        ));
    }
    let icons = parsed["icons"].as_array().cloned().unwrap_or_default();
    if !icons.iter().any(suitable_icon) {
        errors.push(error(
            "manifest-missing-suitable-icon",
            &[("minimum-icon-size-in-pixels", MIN_ICON.to_string())],
        ));
    }
    if !service_worker {
        errors.push(error("no-matching-service-worker", &[]));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::json;

    fn manifest(data: serde_json::Value) -> serde_json::Value {
        json!({ "url": "https://app.example.com/manifest.webmanifest", "data": data.to_string() })
    }

    fn ids(errors: &[serde_json::Value]) -> Vec<&str> {
        errors
            .iter()
            .map(|e| e["errorId"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_complete_manifest_with_a_service_worker_is_installable() {
        let good = manifest(json!({
            "name": "Glow", "start_url": "/tasks", "display": "standalone",
            "icons": [{ "src": "/i/192.png", "sizes": "192x192", "type": "image/png" }]
        }));
        assert!(check(&good, true, true).is_empty());
    }

    #[test]
    fn each_missing_criterion_has_chromes_error_id() {
        let bare = manifest(json!({
            "start_url": "https://elsewhere.example.com/", "display": "browser",
            "icons": [{ "src": "/i/48.png", "sizes": "48x48" }, { "src": "/i/m.png", "sizes": "512x512", "purpose": "maskable" }]
        }));
        assert_eq!(
            ids(&check(&bare, false, false)),
            [
                "not-from-secure-origin",
                "manifest-missing-name-or-short-name",
                "start-url-not-valid",
                "manifest-display-not-supported",
                "manifest-missing-suitable-icon",
                "no-matching-service-worker"
            ]
        );
        let none = json!({ "url": "", "data": null });
        assert_eq!(ids(&check(&none, true, true)), ["no-manifest"]);
    }
}
