//! `browser`: the runbook's front-end checks in a real headless Chromium over the DevTools
//! protocol (chromiumoxide). `browser::open(url, opts?)` returns a Page with `wait_for`,
//! `exists`, `text`, `title`, `url`, `status`, `screenshot`, `installability`, `manifest`,
//! `console_errors`, `click`, `fill`, `upload` and `close`.
//!
//! - One browser per run, started on first use (launch.rs: own process group, fresh profile,
//!   killed on cancellation, at the end of the run, and by the kernel if glow-run dies).
//! - Every call goes through the effect gate with the page's URL as target and the selector in
//!   its arguments, so each is journaled. Navigations and reads are read-only (they run in a dry
//!   run); `click`, `fill` and `upload` change the application and are planned in a dry run
//!   unless `read_only: true`. `[http] allow_hosts` applies to `open` before anything starts,
//!   and to every document the page navigates to afterwards (redirects, links, frames).
//! - Every call has a timeout (default 30 s) and is raced against the run's cancellation.
//! - A screenshot is stored through the artifact store (manifest, sha256, dry run planned).
//! - Without a browser, a live run fails naming what was looked for; a dry run lists it as a
//!   need and goes on with a planned page (its reads return nothing).

mod criteria;
pub mod launch;
mod tab;

use super::{Effect, HostContext, Need, add_fn, add_method, install, map_of};
use crate::options::{HostResult, Options, host_error};
use crate::policy::Subject;
use futures::future::LocalBoxFuture;
use rhai::{Array, Dynamic, Engine, Map, Module};
use serde_json::{Value, json};
use std::cell::{OnceCell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tab::Tab;

/// Default timeout of every browser call (a navigation, a `wait_for`, a click).
pub const DEFAULT_BROWSER_TIMEOUT: Duration = Duration::from_secs(30);
/// How a missing browser is listed among a dry run's needs.
const NEED: &str = "chromium (or GLOW_BROWSER)";

/// The run's browser: found once, started on first use, killed when the run ends.
#[derive(Default)]
pub struct Session {
    executable: OnceCell<Result<PathBuf, String>>,
    running: RefCell<Option<launch::Launched>>,
}

impl Session {
    fn executable(&self, ctx: &HostContext) -> Result<PathBuf, String> {
        self.executable
            .get_or_init(|| launch::find(super::env::lookup(ctx, "GLOW_BROWSER").as_deref()))
            .clone()
    }

    /// Kills the browser (a cancelled call may have left it mid-navigation); the next `open`
    /// starts a new one.
    fn shutdown(&self) {
        if let Some(running) = self.running.borrow_mut().take() {
            running.kill();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A page as scripts see it. A planned page (a dry run without a browser) has no tab.
#[derive(Clone)]
pub struct Page {
    inner: Rc<PageInner>,
}

struct PageInner {
    tab: RefCell<Option<Tab>>,
    /// The URL now shown (the effect target of every call on the page).
    url: RefCell<String>,
    status: i64,
    planned: bool,
    session: Rc<Session>,
}

impl Page {
    fn url(&self) -> String {
        self.inner.url.borrow().clone()
    }
}

/// One page call: what the gate journals and how it runs.
struct Call<'a> {
    action: &'static str,
    selector: Option<&'a str>,
    detail: Value,
    read_only: bool,
    timeout: Duration,
}

impl<'a> Call<'a> {
    fn read(action: &'static str, selector: Option<&'a str>) -> Self {
        Self {
            action,
            selector,
            detail: json!({}),
            read_only: true,
            timeout: DEFAULT_BROWSER_TIMEOUT,
        }
    }
}

/// Runs `work` on the page's tab through the gate, with the call's timeout and the run's
/// cancellation. `Ok(None)` when the gate only planned it or the page is planned.
fn on_tab<T>(
    ctx: &HostContext,
    page: &Page,
    call: Call<'_>,
    work: impl for<'t> FnOnce(&'t Tab) -> LocalBoxFuture<'t, Result<T, String>>,
) -> HostResult<Option<T>> {
    let url = page.url();
    let mut detail = call.detail;
    if let Some(selector) = call.selector {
        detail["selector"] = json!(selector);
    }
    detail["timeout_ms"] = json!(call.timeout.as_millis() as u64);
    let effect = Effect {
        namespace: "browser",
        action: call.action,
        target: url.clone(),
        detail,
        read_only: call.read_only,
        subject: Subject::None,
    };
    let what = format!("page.{}", call.action);
    ctx.perform(
        effect,
        || Ok(None),
        |_event| {
            let borrowed = page.inner.tab.borrow();
            let Some(tab) = borrowed.as_ref() else {
                if page.inner.planned {
                    return Ok(None);
                }
                return Err(host_error(format!("{what}: {url}: the page is closed")));
            };
            let timeout = call.timeout;
            let result = ctx.block_on(async { tokio::time::timeout(timeout, work(tab)).await });
            match result {
                Err(cancelled) => {
                    drop(borrowed);
                    page.inner.tab.borrow_mut().take();
                    page.inner.session.shutdown();
                    Err(cancelled)
                }
                Ok(Err(_)) => Err(host_error(format!(
                    "{what}: {url}: timed out after {}",
                    humantime::format_duration(timeout)
                ))),
                Ok(Ok(Err(why))) => Err(host_error(format!("{what}: {url}: {why}"))),
                Ok(Ok(Ok(value))) => Ok(Some(value)),
            }
        },
    )
}

fn timeout_option(options: &mut Options) -> HostResult<Duration> {
    let timeout = options
        .duration("timeout")?
        .unwrap_or(DEFAULT_BROWSER_TIMEOUT);
    if timeout.is_zero() {
        return Err(host_error(
            "browser: option 'timeout' must be more than zero",
        ));
    }
    Ok(timeout)
}

fn open(ctx: &HostContext, session: &Rc<Session>, url: &str, options: Map) -> HostResult<Page> {
    let mut options = Options::new("browser::open", options);
    let timeout = timeout_option(&mut options)?;
    options.finish()?;
    let parsed = url::Url::parse(url.trim()).map_err(|e| {
        host_error(format!(
            "browser::open: invalid URL '{}': {e}",
            ctx.redact(url)
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(host_error(format!(
            "browser::open: '{}' is not an http(s) URL with a host",
            ctx.redact(url)
        )));
    }
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let executable = session.executable(ctx);
    if executable.is_err() {
        ctx.needed(Need::Program, &[NEED.to_owned()]);
    }
    let effect = Effect {
        namespace: "browser",
        action: "open",
        target: parsed.to_string(),
        detail: json!({ "timeout_ms": timeout.as_millis() as u64 }),
        // Without a browser nothing can be read: the gate plans the navigation instead.
        read_only: executable.is_ok(),
        subject: Subject::Host(&host),
    };
    let planned = || Ok((None, 0, parsed.to_string(), true));
    let (tab, status, url, planned) = ctx.perform(effect, planned, |event| {
        let executable = executable
            .clone()
            .map_err(|why| host_error(format!("browser::open: {why}")))?;
        let (tab, status, final_url) =
            navigate(ctx, session, &executable, parsed.as_str(), timeout)?;
        event.insert("status".into(), json!(status));
        event.insert("url".into(), json!(final_url));
        Ok((Some(tab), status, final_url, false))
    })?;
    Ok(Page {
        inner: Rc::new(PageInner {
            tab: RefCell::new(tab),
            url: RefCell::new(url),
            status,
            planned,
            session: session.clone(),
        }),
    })
}

/// Starts the browser when it is not running, opens a tab and navigates it.
fn navigate(
    ctx: &HostContext,
    session: &Session,
    executable: &std::path::Path,
    url: &str,
    timeout: Duration,
) -> HostResult<(Tab, i64, String)> {
    let crashed = session
        .running
        .borrow_mut()
        .as_mut()
        .is_some_and(|b| !b.alive());
    if crashed {
        ctx.log(
            "warn",
            "browser: the browser had exited; starting a new one",
        );
        session.shutdown();
    }
    if session.running.borrow().is_none() {
        let launched = ctx
            .block_on(launch::start(executable))?
            .map_err(|why| host_error(format!("browser::open: {why}")))?;
        ctx.log(
            "info",
            &format!(
                "browser: started {} (pid {}, profile {})",
                launched.executable.display(),
                launched.pid(),
                launched.profile().display()
            ),
        );
        *session.running.borrow_mut() = Some(launched);
    }
    let policy = ctx.policy.clone();
    let guard: Option<tab::Guard> = policy.http.allow_hosts.is_some().then(|| {
        let policy = policy.clone();
        Arc::new(move |url: &str| {
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            policy
                .check(&Subject::Host(&host))
                .map_err(|rule| format!("navigation to {url} refused: {rule}"))
        }) as tab::Guard
    });
    let running = session.running.borrow();
    let browser = &running.as_ref().expect("started above").browser;
    let work = async {
        let tab = Tab::new(browser, guard).await?;
        let status = tab.goto(url).await?;
        let final_url = tab.url().await?;
        Ok::<_, String>((tab, status, final_url))
    };
    let result = ctx.block_on(async { tokio::time::timeout(timeout, work).await });
    drop(running);
    match result {
        Err(cancelled) => {
            session.shutdown();
            Err(cancelled)
        }
        Ok(Err(_)) => Err(host_error(format!(
            "browser::open: {url} did not load within {}",
            humantime::format_duration(timeout)
        ))),
        Ok(Ok(Err(why))) => Err(host_error(format!("browser::open: {url}: {why}"))),
        Ok(Ok(Ok(opened))) => Ok(opened),
    }
}

fn screenshot(ctx: &HostContext, page: &Page, name: &str) -> HostResult<Map> {
    let bytes = on_tab(ctx, page, Call::read("screenshot", None), |tab| {
        Box::pin(tab.screenshot())
    })?
    .unwrap_or_default();
    super::artifact::write_blob(ctx, name, bytes)
}

fn installability(ctx: &HostContext, page: &Page, options: Map) -> HostResult<Array> {
    let mut options = Options::new("page.installability", options);
    let criteria = options.bool("criteria")?.unwrap_or(false);
    options.finish()?;
    let call = Call {
        detail: json!({ "criteria": criteria }),
        ..Call::read("installability", None)
    };
    let found = on_tab(ctx, page, call, |tab| {
        Box::pin(tab.installability(criteria))
    })?;
    let (errors, source) = found.unwrap_or_default();
    if source.starts_with("criteria (") {
        ctx.log(
            "warn",
            &format!("browser: Chrome gave no installability verdict, so its documented criteria were checked: {source}"),
        );
    }
    Ok(errors
        .iter()
        .map(|error| {
            let mut args = Map::new();
            for arg in error["errorArguments"].as_array().into_iter().flatten() {
                args.insert(
                    arg["name"].as_str().unwrap_or("").into(),
                    Dynamic::from(arg["value"].as_str().unwrap_or("").to_owned()),
                );
            }
            Dynamic::from(map_of([
                (
                    "id",
                    Dynamic::from(error["errorId"].as_str().unwrap_or("").to_owned()),
                ),
                ("args", Dynamic::from(args)),
            ]))
        })
        .collect())
}

fn manifest(ctx: &HostContext, page: &Page) -> HostResult<Map> {
    let raw = on_tab(ctx, page, Call::read("manifest", None), |tab| {
        Box::pin(tab.manifest())
    })?
    .unwrap_or(Value::Null);
    let parsed = raw["data"]
        .as_str()
        .filter(|text| !text.trim().is_empty())
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    let errors: Array = raw["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Dynamic::from(e["message"].as_str().unwrap_or("").to_owned()))
        .collect();
    Ok(map_of([
        (
            "url",
            Dynamic::from(raw["url"].as_str().unwrap_or("").to_owned()),
        ),
        ("errors", Dynamic::from(errors)),
        (
            "manifest",
            parsed.map_or(Dynamic::UNIT, |value| super::json::to_dynamic(&value)),
        ),
    ]))
}

/// `click`, `fill` and `upload`: effects on the application, planned in a dry run unless
/// `read_only: true`.
fn interact(
    ctx: &HostContext,
    page: &Page,
    action: &'static str,
    selector: &str,
    value: Option<&str>,
    options: Map,
) -> HostResult<Map> {
    let what: &'static str = match action {
        "click" => "page.click",
        "fill" => "page.fill",
        _ => "page.upload",
    };
    let mut options = Options::new(what, options);
    let timeout = timeout_option(&mut options)?;
    let read_only = options.bool("read_only")?.unwrap_or(false);
    let secret = options.bool("secret")?.unwrap_or(false);
    options.finish()?;
    let mut detail = json!({});
    let mut argument = value.map(str::to_owned);
    if action == "fill" {
        let text = value.unwrap_or_default();
        // A typed password is a secret even when nobody said so.
        let password = !page.inner.planned
            && on_tab(
                ctx,
                page,
                Call::read("is_password", Some(selector)),
                |tab| {
                    let selector = selector.to_owned();
                    Box::pin(async move { tab.is_password(&selector).await })
                },
            )?
            .unwrap_or(false);
        if (secret || password) && !text.is_empty() {
            ctx.register_secret(text);
        }
        detail["text"] = json!(text);
    }
    if action == "upload" {
        let path = std::path::absolute(value.unwrap_or_default())
            .map_err(|e| host_error(format!("{what}: {e}")))?;
        if !path.is_file() {
            return Err(host_error(format!(
                "{what}: {} is not a file",
                path.display()
            )));
        }
        argument = Some(path.display().to_string());
        detail["file"] = json!(argument);
    }
    let call = Call {
        action,
        selector: Some(selector),
        detail,
        read_only,
        timeout,
    };
    let argument = argument.unwrap_or_default();
    let target = selector.to_owned();
    let done = on_tab(ctx, page, call, move |tab| {
        Box::pin(async move {
            match action {
                "click" => tab.click(&target).await,
                "fill" => tab.fill(&target, &argument).await,
                _ => tab.upload(&target, &argument).await,
            }
        })
    })?;
    if done.is_some() {
        refresh_url(ctx, page);
    }
    Ok(map_of([("planned", Dynamic::from(done.is_none()))]))
}

/// After a click the page may be elsewhere: later calls name (and journal) the new URL.
fn refresh_url(ctx: &HostContext, page: &Page) {
    let tab = page.inner.tab.borrow();
    if let Some(tab) = tab.as_ref()
        && let Ok(Ok(Ok(url))) =
            ctx.block_on(async { tokio::time::timeout(DEFAULT_BROWSER_TIMEOUT, tab.url()).await })
    {
        *page.inner.url.borrow_mut() = url;
    }
}

fn close(ctx: &HostContext, page: &Page) -> HostResult<()> {
    let url = page.url();
    let effect = Effect {
        namespace: "browser",
        action: "close",
        target: url,
        detail: json!({}),
        read_only: true,
        subject: Subject::None,
    };
    ctx.read(effect, |_event| {
        if let Some(tab) = page.inner.tab.borrow_mut().take() {
            let closed = ctx.block_on(async {
                tokio::time::timeout(DEFAULT_BROWSER_TIMEOUT, tab.close()).await
            });
            if closed.is_err() {
                page.inner.session.shutdown();
            }
        }
        Ok(())
    })
}

mod methods;

pub fn register(engine: &mut Engine, ctx: &Rc<HostContext>) {
    engine.register_type_with_name::<Page>("Page");
    engine.register_fn("to_string", |page: &mut Page| {
        format!("Page({})", page.url())
    });
    engine.register_fn("to_debug", |page: &mut Page| {
        format!("Page({})", page.url())
    });
    engine.register_get("planned", |page: &mut Page| page.inner.planned);
    let session = Rc::new(Session::default());
    // The run ends its browser explicitly (killed, profile removed): a one-shot run never drops
    // its engine, nor the closures holding the session.
    let weak = Rc::downgrade(&session);
    ctx.at_end(move || {
        if let Some(session) = weak.upgrade() {
            session.shutdown();
        }
    });
    let mut module = Module::new();
    let docs_open = "Opens `url` in the run's headless Chromium (started on first use) and returns a Page once it\n\
                     has loaded. A read: it runs in a dry run. `[http] allow_hosts` applies to it and to every\n\
                     page it navigates to. Options: `timeout` (default 30s).";
    let (c, s) = (ctx.clone(), session.clone());
    add_fn(
        &mut module,
        "open",
        &["url: String", "Page"],
        docs_open,
        move |url: &str| open(&c, &s, url, Map::new()),
    );
    let (c, s) = (ctx.clone(), session.clone());
    add_fn(
        &mut module,
        "open",
        &["url: String", "options: Map", "Page"],
        docs_open,
        move |url: &str, options: Map| open(&c, &s, url, options),
    );
    let (c, s) = (ctx.clone(), session);
    add_fn(
        &mut module,
        "executable",
        &["String"],
        "The browser glow-run uses: GLOW_BROWSER, else chromium, chromium-browser or google-chrome on PATH.\n\
         An error naming what was looked for when there is none (in a dry run: \"\", listed as a need).",
        move || -> HostResult<String> {
            match s.executable(&c) {
                Ok(path) => Ok(path.display().to_string()),
                Err(why) => c
                    .missing(Need::Program, &[NEED.to_owned()], || {
                        host_error(format!("browser: {why}"))
                    })
                    .map(|()| String::new()),
            }
        },
    );
    methods::add(&mut module, ctx);
    install(engine, "browser", module);
}
