//! The Events page (the outbox, newest first, a page at a time) and the
//! Plugins page (delivery status, dead letters, retry).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use keyward::{Event, StorageError, Store};
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::view::Ctx;
use super::view::{self, Nav};
use super::{Shared, blocking};

/// Events on one page.
const PAGE: usize = 50;
/// Events read at once, going back.
const WINDOW: usize = 500;
/// Events one request reads at most looking for an account's.
const SCAN: usize = 20_000;

/// The sequence number of the newest event, by a galloping then binary
/// search over "is there an event after `s`" (the outbox reads forward
/// only): a few dozen one-row reads whatever the outbox holds.
fn newest_seq(store: &Store) -> Result<Option<(u64, u64)>, StorageError> {
    let Some(first) = store.events(0, 1)?.first().map(|e| e.seq) else {
        return Ok(None);
    };
    let after = |s: u64| store.events(s, 1).map(|e| !e.is_empty());
    // Invariant: an event exists after `lo`... until `lo` is the newest.
    let mut lo = first;
    let mut step = 1u64;
    while after(lo.saturating_add(step))? {
        lo = lo.saturating_add(step);
        step = step.saturating_mul(2);
    }
    // The newest is in [lo, lo + step].
    let mut hi = lo.saturating_add(step);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if after(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(Some((first, lo)))
}

struct EventPage {
    events: Vec<Event>,
    /// Where the next (older) page starts, exclusive.
    older: Option<u64>,
}

fn newest_first(
    store: &Store,
    before: Option<u64>,
    owner: Option<&str>,
) -> Result<EventPage, StorageError> {
    let Some((first, newest)) = newest_seq(store)? else {
        return Ok(EventPage {
            events: Vec::new(),
            older: None,
        });
    };
    let mut hi = before.unwrap_or(u64::MAX).min(newest.saturating_add(1));
    let mut out = Vec::new();
    let mut scanned = 0;
    while hi > first && scanned < SCAN {
        let lo = hi.saturating_sub(WINDOW as u64 + 1);
        let mut chunk = store.events(lo, WINDOW)?;
        chunk.retain(|e| e.seq < hi);
        scanned += chunk.len();
        for e in chunk.into_iter().rev() {
            if owner.is_none_or(|o| e.data.get("owner").and_then(Value::as_str) == Some(o)) {
                out.push(e);
                if out.len() == PAGE {
                    let older = out.last().map(|e| e.seq).filter(|s| *s > first);
                    return Ok(EventPage { events: out, older });
                }
            }
        }
        hi = lo + 1;
    }
    Ok(EventPage {
        events: out,
        older: (hi > first).then_some(hi),
    })
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    before: Option<u64>,
}

/// The details of an event beyond its kind, key, owner and actor.
fn details(data: &Value) -> String {
    match data {
        Value::Object(map) => {
            let rest: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(k, _)| *k != "owner" && *k != "actor")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if rest.is_empty() {
                String::new()
            } else {
                Value::Object(rest).to_string()
            }
        }
        other => other.to_string(),
    }
}

/// `GET /events`: the outbox, newest first.
pub(crate) async fn events(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(q): Query<EventsQuery>,
) -> Response {
    let before = q.before;
    let page = blocking(&app, move |app| {
        newest_first(&app.store, before, app.owner.as_deref())
    })
    .await;
    let page = match page {
        Ok(p) => p,
        Err(e) => return view::failed("Reading events", &e),
    };
    let flash = app.sessions.take_flash(&ctx.session);
    let body = html! {
        div.heading { h1 { "Events" } }
        p.muted { "What happened to keys, newest first: what plugins are told." }
        @if page.events.is_empty() { p.muted { "No events." } } @else {
            table #events {
                thead { tr { th { "#" } th { "When" } th { "Event" } th { "Key" } th { "Owner" } th { "By" } th { "Details" } } }
                tbody { @for e in &page.events {
                    tr {
                        td.num { (e.seq) }
                        td { (view::when(Some(e.at))) }
                        td { code { (e.kind.as_str()) } }
                        td { a href=(format!("/keys/{}", e.key_id)) { (e.name) } br; code.small { (e.masked) } }
                        td { (e.data.get("owner").and_then(Value::as_str).unwrap_or("—")) }
                        td { (e.data.get("actor").and_then(Value::as_str).unwrap_or("—")) }
                        td { code.small { (details(&e.data)) } }
                    }
                } }
            }
        }
        @if let Some(older) = page.older {
            p.pager { a href=(format!("/events?before={older}")) { "Older events →" } }
        }
    };
    view::page(&app, &ctx, Nav::Events, "Events", &flash, body)
}

/// `GET /plugins`: every plugin's delivery and dead letters.
#[cfg(feature = "plugins")]
pub(crate) async fn plugins(State(app): State<Shared>, ctx: Ctx) -> Response {
    if !view::plugins_page(&app) {
        return view::not_found_page();
    }
    let listed = blocking(&app, |app| {
        let plugins = app.store.plugins()?;
        let mut out = Vec::with_capacity(plugins.len());
        for p in plugins {
            let letters = app.store.plugin_dead_letters(&p.name)?;
            out.push((p, letters));
        }
        Ok::<_, keyward::PluginError>(out)
    })
    .await;
    let listed = match listed {
        Ok(l) => l,
        Err(e) => return view::failed("Reading plugins", &e),
    };
    let flash = app.sessions.take_flash(&ctx.session);
    let body = html! {
        div.heading { h1 { "Plugins" } }
        p.muted { "Notifier plugins deliver events to outside systems. Install them with " code { "keyward plugin install" } "." }
        @if listed.is_empty() { p.muted { "No plugins installed." } }
        @for (p, letters) in &listed {
            @let s = &p.status;
            section.card.plugin data-plugin=(p.name) {
                h2 { (p.name) " " span.muted { (p.version) } " "
                    @if p.enabled { span.badge.good { "enabled" } } @else { span.badge.warn { "paused" } } }
                dl.details {
                    dt { "Events" } dd { (p.events.join(", ")) }
                    dt { "Delivered" } dd { (s.delivered) }
                    dt { "Pending" } dd.pending { (s.pending) }
                    dt { "Failed attempts" } dd { (s.failed) }
                    dt { "Last delivery" } dd { (view::when(s.last_success_at)) }
                    @if let Some(err) = &s.last_error {
                        dt { "Last error" } dd { (err) " (" (view::when(s.last_error_at)) ")" }
                    }
                    @if s.next_attempt_at.is_some() {
                        dt { "Next attempt" } dd { (view::when(s.next_attempt_at)) }
                    }
                }
                h3 { "Dead letters (" (letters.len()) ")" }
                @if letters.is_empty() { p.muted { "None." } } @else {
                    table.letters {
                        thead { tr { th { "#" } th { "Event" } th { "Attempts" } th { "Error" } th { "When" } } }
                        tbody { @for l in letters {
                            tr {
                                td.num { (l.seq) } td { code { (l.kind) } } td.num { (l.attempts) }
                                td { (l.error) } td { (view::when(Some(l.at))) }
                            }
                        } }
                    }
                    form method="post" action=(format!("/plugins/{}/retry", p.name)) {
                        (view::csrf(&ctx))
                        button type="submit" { "Retry dead letters" }
                    }
                }
            }
        }
    };
    view::page(&app, &ctx, Nav::Plugins, "Plugins", &flash, body)
}

#[cfg(not(feature = "plugins"))]
pub(crate) async fn plugins() -> Response {
    view::not_found_page()
}

/// `POST /plugins/{name}/retry`: queues a plugin's dead letters again.
#[cfg(feature = "plugins")]
pub(crate) async fn retry(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Response {
    use super::view::Flash;
    use axum::response::{IntoResponse, Redirect};
    if !view::plugins_page(&app) {
        return view::not_found_page();
    }
    let plugin = name.clone();
    match blocking(&app, move |app| app.store.retry_plugin(&plugin)).await {
        Ok(n) => {
            app.sessions.set_flash(
                &ctx.session,
                Flash {
                    notice: Some(format!(
                        "Queued {n} dead letter(s) of {name} for another attempt."
                    )),
                    ..Flash::default()
                },
            );
            Redirect::to("/plugins").into_response()
        }
        Err(keyward::PluginError::NotFound(_)) => view::not_found_page(),
        Err(e) => view::failed("Retrying", &e),
    }
}

#[cfg(not(feature = "plugins"))]
pub(crate) async fn retry(Path(_): Path<String>) -> Response {
    view::not_found_page()
}
