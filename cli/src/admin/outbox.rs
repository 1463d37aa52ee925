//! The Events page (the outbox, newest first, a page at a time) and the
//! Plugins page (delivery status, dead letters, retry).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use keyward::{EventKind, EventQuery};
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::view::Ctx;
use super::view::{self, Nav};
use super::{Shared, blocking};

/// Events on one page.
const PAGE: usize = 50;

/// The Events page's filters, as the form sends them (empty: any).
#[derive(Deserialize, Default)]
pub(crate) struct EventsQuery {
    before: Option<u64>,
    #[serde(default)]
    key: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

impl EventsQuery {
    /// The store query these filters make, newest first, or what is wrong
    /// with them. An account's panel sees that account's events only.
    fn query(&self, account: Option<&str>) -> Result<EventQuery, String> {
        let mut q = EventQuery::new().newest_first().limit(PAGE);
        if let Some(b) = self.before {
            q = q.before(b);
        }
        fn given(s: &str) -> Option<&str> {
            Some(s.trim()).filter(|s| !s.is_empty())
        }
        let filters = crate::events::Filters {
            key: given(&self.key),
            owner: account.or(given(&self.owner)),
            actor: given(&self.actor),
            kinds: given(&self.kind).into_iter().collect(),
            since: given(&self.since),
            until: given(&self.until),
        };
        filters.apply(q).map_err(|f| f.message)
    }

    /// This page's filters as a query string, with `before`.
    fn link(&self, before: u64) -> String {
        let mut url = form_urlencoded::Serializer::new(String::new());
        url.append_pair("before", &before.to_string());
        for (name, value) in [
            ("key", &self.key),
            ("owner", &self.owner),
            ("actor", &self.actor),
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.is_empty() {
                url.append_pair(name, value);
            }
        }
        format!("/events?{}", url.finish())
    }
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

/// `GET /events`: the outbox, newest first, filtered by key, account,
/// actor, kind and time.
pub(crate) async fn events(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(f): Query<EventsQuery>,
) -> Response {
    let query = f.query(app.owner.as_deref());
    let found = match query.clone() {
        Ok(q) => Some(blocking(&app, move |app| app.store.events_query(&q)).await),
        Err(_) => None,
    };
    let page = match found {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return view::failed("Reading events", &e),
        None => None,
    };
    let flash = app.sessions.take_flash(&ctx.session);
    let body = html! {
        div.heading { h1 { "Events" } }
        p.muted { "What happened to keys, and who did it, newest first: what plugins are told." }
        form.filters #event-filters method="get" action="/events" {
            label { "Key " input type="text" name="key" value=(f.key) placeholder="key id" size="14"; }
            @if app.owner.is_none() {
                label { "Account " input type="text" name="owner" value=(f.owner) placeholder="owner" size="14"; }
            }
            label { "By " input type="text" name="actor" value=(f.actor) placeholder="cli:alice, admin panel" size="16"; }
            label { "Kind "
                select name="kind" {
                    option value="" { "any" }
                    @for k in EventKind::NAMES { option value=(k) selected[f.kind == *k] { (k) } }
                }
            }
            label { "Since " input type="text" name="since" value=(f.since) placeholder="7d or RFC 3339" size="12"; }
            label { "Until " input type="text" name="until" value=(f.until) placeholder="1d or RFC 3339" size="12"; }
            button type="submit" { "Filter" }
            " " a href="/events" { "Clear" }
        }
        @if let Err(why) = &query { p.error #filter-error { (why) } }
        @if let Some(page) = &page {
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
            @if let Some(older) = page.next {
                p.pager { a href=(f.link(older)) { "Older events →" } }
            }
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
