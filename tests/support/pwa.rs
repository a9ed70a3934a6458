//! A small installable web app served by the test HTTP server (127.0.0.1) under a prefix: four
//! pages (tasks, documents, onboarding, assistant) each with the assistant dock, a valid web
//! app manifest with real PNG icons (192 and 512 px), a service worker, and on the documents
//! page an upload form that POSTs the chosen file to `upload_path`.
//!
//! Fault switches (`PwaFaults`): a page without the dock, a manifest without icons (not
//! installable), a page that logs a console error, a page that never answers (slow).

use super::http_server::{HttpServer, Reply, Request};

pub const PAGES: [&str; 4] = ["tasks", "documents", "onboarding", "assistant"];
/// The dock's selector, as the release script's default expects it.
pub const DOCK: &str = "[data-testid=assistant-dock]";

#[derive(Debug, Default, Clone, Copy)]
pub struct PwaFaults {
    /// This page has no assistant dock.
    pub no_dock: Option<&'static str>,
    /// The manifest lists no icons.
    pub manifest_without_icons: bool,
    /// This page calls console.error while loading.
    pub console_error: Option<&'static str>,
    /// This page never answers.
    pub slow: Option<&'static str>,
}

/// A solid-colour RGB PNG of `size` x `size` pixels (signature, IHDR, IDAT, IEND).
pub fn png(size: u32) -> Vec<u8> {
    use std::io::Write;
    let row: Vec<u8> = std::iter::once(0u8)
        .chain((0..size).flat_map(|_| [0x1e, 0x64, 0xc8]))
        .collect();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    for _ in 0..size {
        zlib.write_all(&row).unwrap();
    }
    let pixels = zlib.finish().unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", header), (b"IDAT", pixels), (b"IEND", Vec::new())] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(&data);
        out.extend_from_slice(kind);
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

fn html(body: String) -> Reply {
    Reply::status(200)
        .header("content-type", "text/html; charset=utf-8")
        .body(body.as_bytes())
}

fn page(prefix: &str, name: &str, faults: PwaFaults, upload_path: &str) -> String {
    let title = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
    let dock = if faults.no_dock == Some(name) {
        String::new()
    } else {
        "<aside id=\"assistant-dock\" data-testid=\"assistant-dock\">Assistant</aside>".to_owned()
    };
    let error = if faults.console_error == Some(name) {
        format!("console.error('{name}: failed to load widgets');")
    } else {
        String::new()
    };
    let upload = if name == "documents" {
        format!(
            r#"<input type="file" id="document-file"><button id="document-upload">Upload</button>
<p id="upload-status"></p>
<script>
document.getElementById('document-upload').addEventListener('click', async () => {{
  const file = document.getElementById('document-file').files[0];
  const status = document.getElementById('upload-status');
  const response = await fetch('{upload_path}?name=' + encodeURIComponent(file.name), {{ method: 'POST', body: file }});
  status.textContent = 'uploaded ' + file.name;
  status.dataset.state = response.ok ? 'done' : 'failed';
}});
</script>"#
        )
    } else {
        String::new()
    };
    let nav: String = PAGES
        .iter()
        .map(|p| format!("<a href=\"{prefix}/{p}\">{p}</a> "))
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title} · Prisma Glow</title>
<link rel="manifest" href="{prefix}/manifest.webmanifest">
<link rel="icon" href="{prefix}/icons/icon-192.png">
</head><body>
<nav>{nav}</nav><main><h1>{title}</h1>{upload}</main>{dock}
<script>navigator.serviceWorker.register('{prefix}/sw.js', {{ scope: '{prefix}/' }}); {error}</script>
</body></html>"#
    )
}

fn manifest(prefix: &str, faults: PwaFaults) -> String {
    let icons = if faults.manifest_without_icons {
        serde_json::json!([])
    } else {
        serde_json::json!([
            { "src": format!("{prefix}/icons/icon-192.png"), "sizes": "192x192", "type": "image/png" },
            { "src": format!("{prefix}/icons/icon-512.png"), "sizes": "512x512", "type": "image/png" },
        ])
    };
    serde_json::json!({
        "name": "Prisma Glow",
        "short_name": "Glow",
        "start_url": format!("{prefix}/tasks"),
        "scope": format!("{prefix}/"),
        "display": "standalone",
        "background_color": "#ffffff",
        "theme_color": "#1e64c8",
        "icons": icons,
    })
    .to_string()
}

/// Serves the app under `prefix` ("/app"); uploads go to `upload_path` (answered 201).
pub fn mount(server: &HttpServer, prefix: &str, faults: PwaFaults, upload_path: &str) {
    for name in PAGES {
        let path = format!("{prefix}/{name}");
        if faults.slow == Some(name) {
            server.route(&path, [Reply::hang()]);
            continue;
        }
        server.route(&path, [html(page(prefix, name, faults, upload_path))]);
    }
    server.route(
        &format!("{prefix}/manifest.webmanifest"),
        [Reply::status(200)
            .header("content-type", "application/manifest+json")
            .body(manifest(prefix, faults).as_bytes())],
    );
    for size in [192, 512] {
        let icon = Reply::status(200)
            .header("content-type", "image/png")
            .body(&png(size));
        server.route(&format!("{prefix}/icons/icon-{size}.png"), [icon]);
    }
    server.route(
        "/favicon.ico",
        [Reply::status(200)
            .header("content-type", "image/png")
            .body(&png(16))],
    );
    server.route(
        &format!("{prefix}/sw.js"),
        [Reply::status(200)
            .header("content-type", "text/javascript")
            .body(b"self.addEventListener('install', () => self.skipWaiting());\nself.addEventListener('fetch', () => {});\n")],
    );
    server.handle(upload_path, |request: &Request| {
        Reply::json(
            201,
            serde_json::json!({ "name": request.query_param("name"), "size": request.body.len() }),
        )
    });
}

/// A server with just the app under `/app`, uploads to `/app/upload`.
pub fn start(faults: PwaFaults) -> HttpServer {
    let server = HttpServer::start();
    mount(&server, "/app", faults, "/app/upload");
    server
}
