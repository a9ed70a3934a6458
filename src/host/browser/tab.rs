//! One open page over CDP: navigation with its HTTP status, selectors, console errors, the web
//! app manifest and Chrome's installability verdict, screenshots, and the three interactions
//! (click, fill, upload). Everything here is async and knows nothing of Rhai, the gate or dry
//! runs: `browser.rs` wraps each call in the effect gate and the run's cancellation.

use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown, RemoteObject,
};
use chromiumoxide::listeners::EventStream;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, Page};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often `wait_for` looks for its selector.
const POLL: Duration = Duration::from_millis(50);

/// A raw CDP command (method name and JSON params, JSON result): for the calls whose typed
/// return in chromiumoxide lags behind what current Chromium sends (`Page.getAppManifest`).
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
struct Raw {
    #[serde(skip)]
    method: &'static str,
    params: Value,
}

impl chromiumoxide::types::Method for Raw {
    fn identifier(&self) -> chromiumoxide::types::MethodId {
        self.method.into()
    }
}

impl chromiumoxide::types::Command for Raw {
    type Response = Value;
}

/// Decides whether a navigation may go to a URL (`[http] allow_hosts`): `Err(rule)` blocks it.
pub type Guard = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The console's event streams and the errors read from them so far.
struct Console {
    calls: EventStream<EventConsoleApiCalled>,
    thrown: EventStream<EventExceptionThrown>,
    logged: EventStream<EventEntryAdded>,
    seen: Vec<String>,
}

impl Console {
    /// Moves every event already delivered into `seen`, keeping the errors.
    fn drain(&mut self) {
        while let Some(Some(event)) = self.calls.next().now_or_never() {
            if matches!(
                event.r#type,
                ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert
            ) {
                let text: Vec<String> = event.args.iter().map(describe).collect();
                self.seen.push(text.join(" "));
            }
        }
        while let Some(Some(event)) = self.thrown.next().now_or_never() {
            let details = &event.exception_details;
            let text = details
                .exception
                .as_ref()
                .and_then(|e| e.description.clone())
                .unwrap_or_else(|| details.text.clone());
            self.seen.push(text);
        }
        // Failed resource loads and the like: what DevTools' console shows in red.
        while let Some(Some(event)) = self.logged.next().now_or_never() {
            if event.entry.level == LogEntryLevel::Error {
                let mut text = event.entry.text.clone();
                if let Some(url) = &event.entry.url {
                    text.push_str(&format!(" ({url})"));
                }
                self.seen.push(text);
            }
        }
    }
}

/// A page and what its listeners collected.
pub struct Tab {
    page: Page,
    console: Mutex<Console>,
    /// Navigations the guard refused, with the rule.
    blocked: Arc<Mutex<Vec<String>>>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

fn cdp_error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// How a console argument reads in DevTools: strings as they are, others by description.
fn describe(object: &RemoteObject) -> String {
    match &object.value {
        Some(Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
        None => object.description.clone().unwrap_or_default(),
    }
}

impl Tab {
    /// A new blank page with its console listeners and, when `guard` is given, document
    /// navigations paused until the guard allows them.
    pub async fn new(browser: &Browser, guard: Option<Guard>) -> Result<Self, String> {
        let page = browser.new_page("about:blank").await.map_err(cdp_error)?;
        let console = Console {
            calls: page
                .event_listener::<EventConsoleApiCalled>()
                .await
                .map_err(cdp_error)?,
            thrown: page
                .event_listener::<EventExceptionThrown>()
                .await
                .map_err(cdp_error)?,
            logged: page
                .event_listener::<EventEntryAdded>()
                .await
                .map_err(cdp_error)?,
            seen: Vec::new(),
        };
        let mut tab = Self {
            page,
            console: Mutex::new(console),
            blocked: Arc::new(Mutex::new(Vec::new())),
            listeners: Vec::new(),
        };
        tab.raw("Runtime.enable", json!({})).await?;
        tab.raw("Log.enable", json!({})).await?;
        // chromiumoxide auto-attaches to the page's workers with `waitForDebuggerOnStart`, which
        // left a service worker's registration pending for ever: attach without pausing them.
        tab.raw(
            "Target.setAutoAttach",
            json!({ "autoAttach": true, "waitForDebuggerOnStart": false, "flatten": true }),
        )
        .await?;
        if let Some(guard) = guard {
            tab.guard_navigations(guard).await?;
        }
        Ok(tab)
    }

    async fn raw(&self, method: &'static str, params: Value) -> Result<Value, String> {
        self.page
            .execute(Raw { method, params })
            .await
            .map(|response| response.result)
            .map_err(|e| format!("{method}: {e}"))
    }

    /// Pauses every document request (top-level and frames, redirects included) and lets it
    /// continue only when the guard allows its host.
    async fn guard_navigations(&mut self, guard: Guard) -> Result<(), String> {
        use chromiumoxide::cdp::browser_protocol::fetch::EventRequestPaused;
        let mut paused = self
            .page
            .event_listener::<EventRequestPaused>()
            .await
            .map_err(cdp_error)?;
        let page = self.page.clone();
        let blocked = self.blocked.clone();
        self.listeners.push(tokio::spawn(async move {
            while let Some(event) = paused.next().await {
                let id = event.request_id.inner().clone();
                let (method, params) = match guard(&event.request.url) {
                    Ok(()) => ("Fetch.continueRequest", json!({ "requestId": id })),
                    Err(rule) => {
                        blocked.lock().unwrap_or_else(|e| e.into_inner()).push(rule);
                        (
                            "Fetch.failRequest",
                            json!({ "requestId": id, "errorReason": "BlockedByClient" }),
                        )
                    }
                };
                let _ = page.execute(Raw { method, params }).await;
            }
        }));
        self.raw(
            "Fetch.enable",
            json!({ "patterns": [ { "urlPattern": "*", "resourceType": "Document" } ] }),
        )
        .await?;
        Ok(())
    }

    /// The first navigation the guard refused since the last call, if any.
    pub fn take_blocked(&self) -> Option<String> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let first = blocked.first().cloned();
        blocked.clear();
        first
    }

    /// Navigates and waits for the load event; returns the main document's HTTP status.
    pub async fn goto(&self, url: &str) -> Result<i64, String> {
        if let Err(e) = self.page.goto(url).await {
            return Err(match self.take_blocked() {
                Some(rule) => rule,
                None => format!("navigation failed: {e}"),
            });
        }
        if let Some(rule) = self.take_blocked() {
            return Err(rule);
        }
        self.status().await
    }

    /// The HTTP status of the document now shown (Navigation Timing's `responseStatus`).
    pub async fn status(&self) -> Result<i64, String> {
        let status = self
            .eval("(performance.getEntriesByType('navigation')[0] || {}).responseStatus || 0")
            .await?;
        Ok(status.as_i64().unwrap_or(0))
    }

    /// Evaluates an expression in the page and returns its value as JSON.
    async fn eval(&self, expression: &str) -> Result<Value, String> {
        let result = self.page.evaluate(expression).await.map_err(cdp_error)?;
        Ok(result.value().cloned().unwrap_or(Value::Null))
    }

    /// `document.querySelector(selector)` as a JS expression, the selector safely quoted.
    fn query(selector: &str) -> String {
        format!("document.querySelector({})", Value::from(selector))
    }

    pub async fn exists(&self, selector: &str) -> Result<bool, String> {
        let found = self
            .eval(&format!("{} !== null", Self::query(selector)))
            .await?;
        Ok(found == Value::Bool(true))
    }

    /// Waits until `selector` matches (true) or `timeout` passes (false).
    pub async fn wait_for(&self, selector: &str, timeout: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        loop {
            // A page still navigating has no context for a moment: try again.
            if self.exists(selector).await.unwrap_or(false) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL.min(deadline - Instant::now())).await;
        }
    }

    /// The visible text of the first match, `None` when nothing matches.
    pub async fn text(&self, selector: &str) -> Result<Option<String>, String> {
        let value = self
            .eval(&format!(
                "(() => {{ const e = {}; return e === null ? null : e.innerText; }})()",
                Self::query(selector)
            ))
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    pub async fn title(&self) -> Result<String, String> {
        Ok(self
            .eval("document.title")
            .await?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    pub async fn url(&self) -> Result<String, String> {
        Ok(self
            .page
            .url()
            .await
            .map_err(cdp_error)?
            .unwrap_or_default())
    }

    /// Console errors so far. A round trip first: CDP delivers events in order, so every event
    /// the page emitted before it is then in the streams.
    pub async fn console_errors(&self) -> Result<Vec<String>, String> {
        self.eval("0").await?;
        let mut console = self.console.lock().unwrap_or_else(|e| e.into_inner());
        console.drain();
        Ok(console.seen.clone())
    }

    /// A PNG of the whole page.
    pub async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let params = ScreenshotParams::builder()
            .format(CaptureScreenshotFormat::Png)
            .full_page(true)
            .build();
        self.page.screenshot(params).await.map_err(cdp_error)
    }

    /// Chrome's installability errors (`Page.getInstallabilityErrors`): empty when installable.
    /// When the browser cannot answer (the method is experimental), or `criteria` asks for it,
    /// Chrome's documented criteria are checked instead; the text says why (journaled).
    pub async fn installability(&self, criteria: bool) -> Result<(Vec<Value>, String), String> {
        if !criteria {
            match self.raw("Page.getInstallabilityErrors", json!({})).await {
                Ok(result) => {
                    let errors = result["installabilityErrors"].as_array().cloned();
                    return Ok((errors.unwrap_or_default(), "chrome".into()));
                }
                Err(why) => {
                    let (errors, _) = Box::pin(self.installability(true)).await?;
                    return Ok((errors, format!("criteria ({why})")));
                }
            }
        }
        let manifest = self.manifest().await?;
        let facts = self
            .eval(
                // A worker the page registers may still be installing: wait up to 2 s for it.
                "(async () => ({ secure: window.isSecureContext, worker: !!navigator.serviceWorker \
                 && await Promise.race([navigator.serviceWorker.ready.then(() => true), \
                 new Promise(done => setTimeout(() => done(false), 2000))]) }))()",
            )
            .await?;
        let errors = super::criteria::check(
            &manifest,
            facts["secure"] == Value::Bool(true),
            facts["worker"] == Value::Bool(true),
        );
        Ok((errors, "criteria".into()))
    }

    /// `Page.getAppManifest`: the manifest's URL, Chrome's parse errors, and its JSON text.
    pub async fn manifest(&self) -> Result<Value, String> {
        self.raw("Page.getAppManifest", json!({})).await
    }

    /// Evaluates a function on the first match of `selector` (an error naming it when none).
    async fn on_element(&self, selector: &str, body: &str) -> Result<Value, String> {
        let value = self
            .eval(&format!(
                "(() => {{ const e = {}; if (e === null) return {{ missing: true }}; {body} }})()",
                Self::query(selector)
            ))
            .await?;
        if value["missing"] == Value::Bool(true) {
            return Err(format!("no element matches '{selector}'"));
        }
        Ok(value)
    }

    /// Whether the first match is a password field (its value is then a secret).
    pub async fn is_password(&self, selector: &str) -> Result<bool, String> {
        let value = self
            .on_element(selector, "return { password: e.type === 'password' };")
            .await?;
        Ok(value["password"] == Value::Bool(true))
    }

    /// A real mouse click in the middle of the element (scrolled into view first).
    pub async fn click(&self, selector: &str) -> Result<(), String> {
        let element = self
            .page
            .find_element(selector)
            .await
            .map_err(|_| format!("no element matches '{selector}'"))?;
        element.click().await.map_err(cdp_error)?;
        Ok(())
    }

    /// Clears the field and types `text` as keyboard input would (input events fire), then
    /// fires `change`.
    pub async fn fill(&self, selector: &str, text: &str) -> Result<(), String> {
        self.on_element(
            selector,
            "e.focus(); if ('value' in e) e.value = ''; return {};",
        )
        .await?;
        self.raw("Input.insertText", json!({ "text": text }))
            .await?;
        self.on_element(
            selector,
            "e.dispatchEvent(new Event('change', { bubbles: true })); return {};",
        )
        .await?;
        Ok(())
    }

    /// Sets the files of an `<input type=file>` (Chrome fires `input` and `change`).
    pub async fn upload(&self, selector: &str, path: &str) -> Result<(), String> {
        let element = self
            .page
            .find_element(selector)
            .await
            .map_err(|_| format!("no element matches '{selector}'"))?;
        self.raw(
            "DOM.setFileInputFiles",
            json!({ "files": [path], "backendNodeId": element.backend_node_id.inner() }),
        )
        .await?;
        Ok(())
    }

    /// Closes the page and stops its listeners.
    pub async fn close(self) -> Result<(), String> {
        for listener in &self.listeners {
            listener.abort();
        }
        self.page.clone().close().await.map_err(cdp_error)
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}
