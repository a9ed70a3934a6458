//! The Page methods as scripts call them (`page.wait_for("#dock")`), with their documentation
//! for `glow-run defs`. Each is a thin adapter over the gate-wrapped calls in `browser.rs`.

use super::{
    Call, DEFAULT_BROWSER_TIMEOUT, Page, add_method, close, installability, interact, manifest,
    on_tab, screenshot, timeout_option,
};
use crate::host::HostContext;
use crate::options::{HostResult, Options, host_error};
use rhai::{Array, Dynamic, Map, Module};
use std::rc::Rc;

fn wait_for(ctx: &HostContext, page: &Page, selector: &str, options: Map) -> HostResult<bool> {
    let mut options = Options::new("page.wait_for", options);
    let timeout = timeout_option(&mut options)?;
    options.finish()?;
    // The wait has its own deadline; the call's timeout is a little longer so the message
    // below (naming the selector) is the one a script sees.
    let call = Call {
        timeout: timeout + DEFAULT_BROWSER_TIMEOUT,
        ..Call::read("wait_for", Some(selector))
    };
    let found = on_tab(ctx, page, call, |tab| {
        let selector = selector.to_owned();
        Box::pin(async move { tab.wait_for(&selector, timeout).await })
    })?;
    match found {
        Some(false) => Err(host_error(format!(
            "page.wait_for: {}: no element matches '{selector}' after {}",
            page.url(),
            humantime::format_duration(timeout)
        ))),
        _ => Ok(true),
    }
}

fn exists(ctx: &HostContext, page: &Page, selector: &str) -> HostResult<bool> {
    Ok(
        on_tab(ctx, page, Call::read("exists", Some(selector)), |tab| {
            let selector = selector.to_owned();
            Box::pin(async move { tab.exists(&selector).await })
        })?
        .unwrap_or(false),
    )
}

fn text(ctx: &HostContext, page: &Page, selector: &str) -> HostResult<String> {
    let text = on_tab(ctx, page, Call::read("text", Some(selector)), |tab| {
        let selector = selector.to_owned();
        Box::pin(async move { tab.text(&selector).await })
    })?;
    match text {
        None => Ok(String::new()),
        Some(Some(text)) => Ok(text),
        Some(None) => Err(host_error(format!(
            "page.text: {}: no element matches '{selector}'",
            page.url()
        ))),
    }
}

fn title(ctx: &HostContext, page: &Page) -> HostResult<String> {
    Ok(on_tab(ctx, page, Call::read("title", None), |tab| {
        Box::pin(tab.title())
    })?
    .unwrap_or_default())
}

fn console_errors(ctx: &HostContext, page: &Page) -> HostResult<Array> {
    let errors = on_tab(ctx, page, Call::read("console_errors", None), |tab| {
        Box::pin(tab.console_errors())
    })?
    .unwrap_or_default();
    Ok(errors
        .into_iter()
        .map(|line| Dynamic::from(ctx.redact(&line)))
        .collect())
}

pub(super) fn add(module: &mut Module, ctx: &Rc<HostContext>) {
    let docs_wait = "Waits until `selector` (CSS) matches an element; an error naming the page and selector when it\n\
                     does not in time. Options: `timeout` (default 30s).";
    let c = ctx.clone();
    add_method(
        module,
        "wait_for",
        &["page: Page", "selector: String", "bool"],
        docs_wait,
        move |page: &mut Page, selector: &str| wait_for(&c, page, selector, Map::new()),
    );
    let c = ctx.clone();
    add_method(
        module,
        "wait_for",
        &["page: Page", "selector: String", "options: Map", "bool"],
        docs_wait,
        move |page: &mut Page, selector: &str, options: Map| wait_for(&c, page, selector, options),
    );
    let c = ctx.clone();
    add_method(
        module,
        "exists",
        &["page: Page", "selector: String", "bool"],
        "Whether `selector` matches an element now.",
        move |page: &mut Page, selector: &str| exists(&c, page, selector),
    );
    let c = ctx.clone();
    add_method(
        module,
        "text",
        &["page: Page", "selector: String", "String"],
        "The visible text (innerText) of the first element `selector` matches; an error when none does.",
        move |page: &mut Page, selector: &str| text(&c, page, selector),
    );
    let c = ctx.clone();
    add_method(
        module,
        "title",
        &["page: Page", "String"],
        "The document's title.",
        move |page: &mut Page| title(&c, page),
    );
    add_method(
        module,
        "url",
        &["page: Page", "String"],
        "The URL the page shows (after redirects and clicks).",
        |page: &mut Page| page.url(),
    );
    add_method(
        module,
        "status",
        &["page: Page", "int"],
        "The HTTP status of the document `browser::open` loaded (0 for a planned page).",
        |page: &mut Page| page.inner.status,
    );
    let c = ctx.clone();
    add_method(
        module,
        "console_errors",
        &["page: Page", "Array"],
        "Console errors, uncaught exceptions and failed loads the page logged so far (strings).",
        move |page: &mut Page| console_errors(&c, page),
    );
    add_app_readers(module, ctx);
    add_actions(module, ctx);
}

/// What the page says about its web app.
fn add_app_readers(module: &mut Module, ctx: &Rc<HostContext>) {
    let c = ctx.clone();
    add_method(
        module,
        "screenshot",
        &["page: Page", "name: String", "Map"],
        "Stores a full-page PNG in the artifact store as `name`; returns `#{ name, sha256, size, planned }`.",
        move |page: &mut Page, name: &str| screenshot(&c, page, name),
    );
    let c = ctx.clone();
    add_method(
        module,
        "installability",
        &["page: Page", "Array"],
        "Chrome's installability errors for the page's web app (CDP Page.getInstallabilityErrors):\n\
         `[]` when the install prompt can appear, else `[#{ id, args }]`.",
        move |page: &mut Page| installability(&c, page, Map::new()),
    );
    let c = ctx.clone();
    add_method(
        module,
        "installability",
        &["page: Page", "options: Map", "Array"],
        "Installability errors; `#{ criteria: true }` checks Chrome's documented criteria (manifest\n\
         members, a 144 px icon, start_url, display, secure context, service worker) instead of asking Chrome.",
        move |page: &mut Page, options: Map| installability(&c, page, options),
    );
    let c = ctx.clone();
    add_method(
        module,
        "manifest",
        &["page: Page", "Map"],
        "The web app manifest (CDP Page.getAppManifest): `#{ url, errors, manifest }`, `manifest` the parsed\n\
         JSON (`()` when the page links none).",
        move |page: &mut Page| manifest(&c, page),
    );
}

/// The calls that change the application (effects) and `close`.
fn add_actions(module: &mut Module, ctx: &Rc<HostContext>) {
    let docs_click = "Clicks the first element `selector` matches. An effect: planned in a dry run unless\n\
                      `read_only: true`. Options: `timeout`, `read_only`.";
    let c = ctx.clone();
    add_method(
        module,
        "click",
        &["page: Page", "selector: String", "Map"],
        docs_click,
        move |page: &mut Page, selector: &str| {
            interact(&c, page, "click", selector, None, Map::new())
        },
    );
    let c = ctx.clone();
    add_method(
        module,
        "click",
        &["page: Page", "selector: String", "options: Map", "Map"],
        docs_click,
        move |page: &mut Page, selector: &str, options: Map| {
            interact(&c, page, "click", selector, None, options)
        },
    );
    let docs_fill = "Types `text` into the field `selector` matches (cleared first). An effect: planned in a dry run\n\
                     unless `read_only: true`. The text is journaled, redacted when it is a secret: registered,\n\
                     `secret: true`, or typed into a password field.";
    let c = ctx.clone();
    add_method(
        module,
        "fill",
        &["page: Page", "selector: String", "text: String", "Map"],
        docs_fill,
        move |page: &mut Page, selector: &str, text: &str| {
            interact(&c, page, "fill", selector, Some(text), Map::new())
        },
    );
    let c = ctx.clone();
    add_method(
        module,
        "fill",
        &[
            "page: Page",
            "selector: String",
            "text: String",
            "options: Map",
            "Map",
        ],
        docs_fill,
        move |page: &mut Page, selector: &str, text: &str, options: Map| {
            interact(&c, page, "fill", selector, Some(text), options)
        },
    );
    let docs_upload = "Sets the file of the `<input type=file>` `selector` matches (the path is relative to the working\n\
                       directory). An effect: planned in a dry run unless `read_only: true`.";
    let c = ctx.clone();
    add_method(
        module,
        "upload",
        &["page: Page", "selector: String", "path: String", "Map"],
        docs_upload,
        move |page: &mut Page, selector: &str, path: &str| {
            interact(&c, page, "upload", selector, Some(path), Map::new())
        },
    );
    let c = ctx.clone();
    add_method(
        module,
        "upload",
        &[
            "page: Page",
            "selector: String",
            "path: String",
            "options: Map",
            "Map",
        ],
        docs_upload,
        move |page: &mut Page, selector: &str, path: &str, options: Map| {
            interact(&c, page, "upload", selector, Some(path), options)
        },
    );
    let c = ctx.clone();
    add_method(
        module,
        "close",
        &["page: Page", "()"],
        "Closes the page (the browser stays for the next `open`).",
        move |page: &mut Page| close(&c, page),
    );
}
