//! One key: the Overview, Usage and Whitelist tabs, and what can be done
//! to it (regenerate and delete behind a confirmation page; disable,
//! enable, rename, expiry; whitelist toggle and entries).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use keyward::{KeyError, KeyId, KeyInfo, Timestamp, Usage, Whitelist, WhitelistError};
use maud::{Markup, html};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::auth::{Ctx, FieldError, Flash, NewKey};
use super::view::{self, Nav};
use super::{App, Shared, blocking, chart, parse_id};

/// Clients seen this recently are named before a regeneration.
const RECENT: Duration = Duration::from_hours(7 * 24);

/// The grace periods a regeneration offers, in seconds.
const GRACES: [(u64, &str); 4] = [
    (0, "none: the current key stops working immediately"),
    (3_600, "1 hour"),
    (86_400, "24 hours"),
    (604_800, "7 days"),
];

/// Which tab of the key page is open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Overview,
    Usage,
    Whitelist,
}

/// The key of the path, if this panel may show it.
async fn load(app: &Shared, id: &str) -> Result<KeyInfo, Response> {
    let id = parse_id(id)?;
    let info = blocking(app, move |app| app.store.get(&id)).await;
    match info {
        Ok(info) if app.visible(&info) => Ok(info),
        Ok(_) | Err(KeyError::NotFound(_)) => Err(view::not_found_page()),
        Err(e) => Err(view::failed("Reading the key", &e)),
    }
}

fn key_page(
    app: &App,
    ctx: &Ctx,
    info: &KeyInfo,
    tab: Tab,
    flash: &Flash,
    body: Markup,
) -> Response {
    let (status, class) = view::status(info, Timestamp::now());
    let base = format!("/keys/{}", info.id);
    let tabs = [
        (Tab::Overview, "Overview", base.clone()),
        (Tab::Usage, "Usage", format!("{base}/usage")),
        (Tab::Whitelist, "Whitelist", format!("{base}/whitelist")),
    ];
    let markup = html! {
        p.crumbs { a href="/keys" { "API keys" } " / " (info.name) }
        div.heading {
            h1 { (info.name) " " span class=(format!("badge {class}")) { (status) } }
            code.masked { (info.masked) }
        }
        nav.tabs role="tablist" {
            @for (t, label, href) in &tabs {
                a role="tab" href=(href) aria-selected=(if *t == tab { "true" } else { "false" })
                    class=[(*t == tab).then_some("active")] { (label) }
            }
        }
        (body)
    };
    view::page(app, ctx, Nav::Keys, &info.name, flash, markup)
}

/// The plaintext of a key just created or regenerated: shown here, once.
fn new_key_banner(new: &NewKey) -> Markup {
    html! {
        section.new-key role="alert" {
            h2 { @if new.regenerated { "Your regenerated key" } @else { "Your new key" } }
            p { "Copy it now: " strong { "it will not be shown again." } " keyward keeps only a hash of it." }
            div.copy {
                code #new-key { (new.key.as_str()) }
                button type="button" data-copy="new-key" { "Copy" }
            }
        }
    }
}

/// `GET /keys/{id}`: the Overview tab.
pub(crate) async fn overview(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let flash = app.sessions.take_flash(&ctx.session);
    let base = format!("/keys/{}", info.id);
    let body = html! {
        @if let Some(new) = flash.new_key.as_ref().filter(|n| n.id == info.id) {
            (new_key_banner(new))
        }
        dl.details {
            dt { "Id" } dd { code { (info.id) } }
            dt { "Key" } dd { code { (info.masked) } }
            dt { "Owner" } dd { @if let Some(o) = &info.owner { (o) } @else { span.muted { "none" } } }
            dt { "Generation" } dd { (info.generation) }
            dt { "Created" } dd { (view::when(Some(info.created_at))) }
            dt { "Last rotated" } dd { (view::when(info.rotated_at)) }
            dt { "Last used" } dd { (view::when(info.last_used_at)) }
            dt { "Expires" } dd { @if info.expires_at.is_some() { (view::when(info.expires_at)) } @else { span.muted { "never" } } }
            @if let Some(g) = info.grace_until.filter(|g| *g > Timestamp::now()) {
                dt { "Old key works until" } dd { (view::when(Some(g))) }
            }
            dt { "Whitelist" } dd { @if info.whitelist_enabled { "on" } @else { "off" } }
            dt { "Rate limits" } dd {
                @if info.limits.is_empty() { span.muted { "none" } }
                @for l in &info.limits {
                    span.limit { (l.name) " " (l.limit) " per " (humantime::format_duration(l.window).to_string()) } " "
                }
            }
            dt { "Quota" } dd {
                @match &info.quota {
                    None => span.muted { "none" },
                    Some(q) => {
                        (q.remaining) " requests left"
                        @if let Some(r) = q.refill { ", reset to " (r.amount) " " (r.period.as_str()) }
                    }
                }
            }
            dt { "Scopes" } dd {
                @if info.scopes.is_empty() { span.muted { "none" } }
                @for s in &info.scopes { code { (s) } " " }
            }
            dt { "Metadata" } dd {
                @match &info.metadata {
                    Some(m) => pre { (serde_json::to_string_pretty(m).unwrap_or_default()) },
                    None => span.muted { "none" },
                }
            }
        }
        section.card {
            h2 { "Regenerate" }
            p { "Issue a new secret for this key. You choose what happens to the current one on the next page." }
            form method="get" action=(format!("{base}/regenerate")) {
                label { "Grace period for the current key"
                    select name="grace" {
                        @for (secs, label) in GRACES {
                            option value=(secs) { (label) }
                        }
                    }
                }
                button.primary type="submit" { "Regenerate…" }
            }
        }
        section.card {
            h2 { "Settings" }
            form.inline method="post" action=(format!("{base}/rename")) {
                (view::csrf(&ctx))
                label { "Name"
                    input type="text" name="name" required maxlength="200"
                        value=(if view::field_value(&flash, "rename", "name").is_empty() { info.name.as_str() } else { view::field_value(&flash, "rename", "name") });
                    (view::field_error(&flash, "rename", "name"))
                }
                button type="submit" { "Rename" }
            }
            form.inline method="post" action=(format!("{base}/expiry")) {
                (view::csrf(&ctx))
                label { "Expiry date (UTC)"
                    input type="date" name="expires"
                        value=(info.expires_at.map(|t| t.to_string()[..10].to_string()).unwrap_or_default());
                    (view::field_error(&flash, "expiry", "expires"))
                }
                button type="submit" name="action" value="set" { "Set expiry" }
                @if info.expires_at.is_some() {
                    button type="submit" name="action" value="clear" { "Remove expiry" }
                }
            }
            @if info.disabled {
                form.inline method="post" action=(format!("{base}/enable")) {
                    (view::csrf(&ctx))
                    button type="submit" { "Enable key" }
                }
            } @else {
                form.inline method="post" action=(format!("{base}/disable")) {
                    (view::csrf(&ctx))
                    button type="submit" { "Disable key" }
                    span.muted { " A disabled key admits nobody until it is enabled again." }
                }
            }
        }
        section.card.danger {
            h2 { "Delete" }
            p { "Every client using this key is refused at once, and its usage is deleted." }
            a.button.danger href=(format!("{base}/delete")) { "Delete key…" }
        }
    };
    key_page(&app, &ctx, &info, Tab::Overview, &flash, body)
}

#[derive(Deserialize)]
pub(crate) struct GraceQuery {
    #[serde(default)]
    grace: String,
}

fn grace(s: &str) -> Option<Duration> {
    let secs: u64 = s.trim().parse().ok()?;
    let d = Duration::from_secs(secs);
    (d <= keyward::MAX_GRACE).then_some(d)
}

fn grace_words(secs: u64) -> &'static str {
    GRACES
        .iter()
        .find(|(s, _)| *s == secs)
        .map_or("the chosen time", |(_, w)| w)
}

/// The clients that used the key since `since`: client IPs (with their
/// integration) and integrations.
fn recent_clients(usage: &Usage, since: Timestamp) -> Vec<String> {
    let mut clients: Vec<String> = usage
        .ips
        .iter()
        .filter(|r| r.last_seen >= since)
        .map(|r| match &r.last_integration {
            Some(i) => format!("{} ({i})", r.ip),
            None => r.ip.to_string(),
        })
        .collect();
    for i in usage.integrations.iter().filter(|i| i.last_seen >= since) {
        if !clients.iter().any(|c| c.contains(&format!("({})", i.name))) {
            clients.push(i.name.clone());
        }
    }
    clients
}

/// `GET /keys/{id}/regenerate?grace=S`: the confirmation.
pub(crate) async fn regenerate_confirm(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<GraceQuery>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(grace_period) = grace(if q.grace.is_empty() { "0" } else { &q.grace }) else {
        return view::refused(
            axum::http::StatusCode::BAD_REQUEST,
            "That grace period is not offered.",
        );
    };
    let key = info.id;
    let usage = match blocking(&app, move |app| app.store.usage(&key)).await {
        Ok(u) => u,
        Err(e) => return view::failed("Reading usage", &e),
    };
    let now = Timestamp::now();
    let since = Timestamp::from_unix_millis(now.unix_millis() - RECENT.as_millis() as i64);
    let clients = recent_clients(&usage, since);
    let flash = app.sessions.take_flash(&ctx.session);
    let base = format!("/keys/{}", info.id);
    let body = html! {
        section.card.confirm #regenerate-confirm {
            h2 { "Regenerate " (info.name) "?" }
            @if grace_period.is_zero() {
                p.consequence { strong { "The current key stops working immediately." } " Every client must be given the new key." }
            } @else {
                p.consequence {
                    strong { "The current key keeps working for " (grace_words(grace_period.as_secs())) ", until " (view::when(Some(now.plus(grace_period)))) ", then stops." }
                    " Give every client the new key before then."
                }
            }
            @if clients.is_empty() {
                p { "No client has used this key in the last 7 days." }
            } @else {
                p { "Clients seen using this key in the last 7 days:" }
                ul.clients { @for c in &clients { li { (c) } } }
            }
            form method="post" action=(format!("{base}/regenerate")) {
                (view::csrf(&ctx))
                input type="hidden" name="grace" value=(grace_period.as_secs());
                button.primary type="submit" { "Regenerate key" }
                " "
                a.button href=(base) { "Cancel" }
            }
        }
    };
    key_page(&app, &ctx, &info, Tab::Overview, &flash, body)
}

#[derive(Deserialize)]
pub(crate) struct GraceForm {
    #[serde(default)]
    grace: String,
}

/// `POST /keys/{id}/regenerate`: the new key, shown once on the Overview.
pub(crate) async fn regenerate(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<GraceForm>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(grace_period) = grace(&form.grace) else {
        return view::refused(
            axum::http::StatusCode::BAD_REQUEST,
            "That grace period is not offered.",
        );
    };
    let key = info.id;
    match blocking(&app, move |app| app.store.regenerate(&key, grace_period)).await {
        Ok(c) => {
            app.sessions.set_flash(
                &ctx.session,
                Flash {
                    new_key: Some(NewKey {
                        id: key,
                        key: Zeroizing::new(c.key.as_str().to_string()),
                        regenerated: true,
                    }),
                    ..Flash::default()
                },
            );
            Redirect::to(&format!("/keys/{key}")).into_response()
        }
        Err(KeyError::NotFound(_)) => view::not_found_page(),
        Err(e) => view::failed("Regenerating the key", &e),
    }
}

/// `GET /keys/{id}/delete`: the confirmation.
pub(crate) async fn delete_confirm(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let flash = app.sessions.take_flash(&ctx.session);
    let base = format!("/keys/{}", info.id);
    let body = html! {
        section.card.confirm.danger #delete-confirm {
            h2 { "Delete " (info.name) "?" }
            p.consequence { strong { "Every client using this key is refused at once." } " Its usage history is deleted. This cannot be undone." }
            form method="post" action=(format!("{base}/delete")) {
                (view::csrf(&ctx))
                button.danger type="submit" { "Delete key" }
                " "
                a.button href=(base) { "Cancel" }
            }
        }
    };
    key_page(&app, &ctx, &info, Tab::Overview, &flash, body)
}

/// `POST /keys/{id}/delete`.
pub(crate) async fn delete(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let key = info.id;
    match blocking(&app, move |app| app.store.delete(&key)).await {
        Ok(()) | Err(KeyError::NotFound(_)) => {
            notice(&app, &ctx, format!("Deleted {}.", info.name));
            Redirect::to("/keys").into_response()
        }
        Err(e) => view::failed("Deleting the key", &e),
    }
}

fn notice(app: &App, ctx: &Ctx, text: String) {
    app.sessions.set_flash(
        &ctx.session,
        Flash {
            notice: Some(text),
            ..Flash::default()
        },
    );
}

fn field_error(
    app: &App,
    ctx: &Ctx,
    form: &'static str,
    field: &'static str,
    message: String,
    value: &str,
) {
    app.sessions.set_flash(
        &ctx.session,
        Flash {
            error: Some(FieldError {
                form,
                field,
                message,
                value: value.to_string(),
            }),
            ..Flash::default()
        },
    );
}

/// A key change from the Overview: done, then back to the Overview.
async fn change(
    app: Shared,
    ctx: &Ctx,
    id: &str,
    done: &'static str,
    f: impl FnOnce(&App, &KeyId) -> Result<KeyInfo, KeyError> + Send + 'static,
) -> Result<Response, (KeyError, String)> {
    let info = match load(&app, id).await {
        Ok(i) => i,
        Err(r) => return Ok(r),
    };
    let key = info.id;
    match blocking(&app, move |app| f(app, &key)).await {
        Ok(_) => {
            notice(&app, ctx, done.to_string());
            Ok(Redirect::to(&format!("/keys/{key}")).into_response())
        }
        Err(KeyError::NotFound(_)) => Ok(view::not_found_page()),
        Err(e) => Err((e, format!("/keys/{key}"))),
    }
}

fn changed(r: Result<Response, (KeyError, String)>) -> Response {
    r.unwrap_or_else(|(e, _)| view::failed("Changing the key", &e))
}

pub(crate) async fn disable(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    changed(
        change(
            app,
            &ctx,
            &id,
            "Disabled: the key admits nobody.",
            |app, k| app.store.set_disabled(k, true),
        )
        .await,
    )
}

pub(crate) async fn enable(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    changed(
        change(app, &ctx, &id, "Enabled.", |app, k| {
            app.store.set_disabled(k, false)
        })
        .await,
    )
}

#[derive(Deserialize)]
pub(crate) struct RenameForm {
    name: String,
}

pub(crate) async fn rename(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<RenameForm>,
) -> Response {
    let name = form.name.trim().to_string();
    let r = change(Arc::clone(&app), &ctx, &id, "Renamed.", move |app, k| {
        app.store.rename(k, &name)
    })
    .await;
    match r {
        Err((e @ KeyError::InvalidInput(_), back)) => {
            field_error(&app, &ctx, "rename", "name", e.to_string(), &form.name);
            Redirect::to(&back).into_response()
        }
        r => changed(r),
    }
}

#[derive(Deserialize)]
pub(crate) struct ExpiryForm {
    #[serde(default)]
    expires: String,
    #[serde(default)]
    action: String,
}

pub(crate) async fn expiry(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ExpiryForm>,
) -> Response {
    let at = if form.action == "clear" {
        None
    } else {
        match super::keys::parse_date(&form.expires) {
            Ok(t) => Some(t),
            Err(m) => {
                field_error(&app, &ctx, "expiry", "expires", m, &form.expires);
                return match parse_id(&id) {
                    Ok(k) => Redirect::to(&format!("/keys/{k}")).into_response(),
                    Err(r) => r,
                };
            }
        }
    };
    let done = if at.is_some() {
        "Expiry set."
    } else {
        "Expiry removed."
    };
    let r = change(Arc::clone(&app), &ctx, &id, done, move |app, k| {
        app.store.set_expiry(k, at)
    })
    .await;
    match r {
        Err((e @ KeyError::InvalidInput(_), back)) => {
            field_error(
                &app,
                &ctx,
                "expiry",
                "expires",
                e.to_string(),
                &form.expires,
            );
            Redirect::to(&back).into_response()
        }
        r => changed(r),
    }
}

/// `GET /keys/{id}/usage`: the Usage tab.
pub(crate) async fn usage(State(app): State<Shared>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let key = info.id;
    let u = match blocking(&app, move |app| app.store.usage(&key)).await {
        Ok(u) => u,
        Err(e) => return view::failed("Reading usage", &e),
    };
    let flash = app.sessions.take_flash(&ctx.session);
    let t = &u.totals;
    let stale_ips: Vec<_> = u.ips.iter().filter(|r| r.stale_secret).collect();
    let stale_integrations: Vec<_> = u.integrations.iter().filter(|r| r.stale_secret).collect();
    let body = html! {
        section.totals {
            div.stat { span.n #allowed-count { (t.allowed) } span { "allowed" } }
            div.stat { span.n #denied-count { (t.denied) } span { "denied" } }
            div.stat { span.n { @if let Some(l) = &u.last_used { (view::when(Some(l.at))) } @else { "never" } } span { "last used" } }
        }
        section.card {
            h2 { "Requests per hour, last 7 days" }
            (chart::hourly(&u.hourly, Timestamp::now()))
        }
        section.card {
            h2 { "Denied attempts by reason" }
            table.reasons #denials { tbody {
                @for (reason, n) in t.by_reason() {
                    tr class=[(n == 0).then_some("muted")] { td { (reason.words()) } td.num data-reason=(reason.as_str()) { (n) } }
                }
            } }
        }
        @if !stale_ips.is_empty() || !stale_integrations.is_empty() {
            section.card.warn #stale {
                h2 { "Still presenting an old secret" }
                p { "These clients sent the secret of an earlier generation in their latest request: give them the regenerated key." }
                ul {
                    @for r in &stale_ips { li { (r.ip) @if let Some(i) = &r.last_integration { " (" (i) ")" } " — last seen " (view::when(Some(r.last_seen))) } }
                    @for r in &stale_integrations { li { (r.name) " — last seen " (view::when(Some(r.last_seen))) } }
                }
            }
        }
        section.card {
            h2 { "Client IPs" }
            @if u.ips.is_empty() { p.muted { "No requests yet." } } @else {
                table #ips {
                    thead { tr { th { "IP" } th { "Integration" } th { "Allowed" } th { "Denied" } th { "First seen" } th { "Last seen" } th {} } }
                    tbody { @for r in &u.ips {
                        tr {
                            td { code { (r.ip) } }
                            td { (r.last_integration.as_deref().unwrap_or("—")) }
                            td.num { (r.allowed) } td.num { (r.denied) }
                            td { (view::when(Some(r.first_seen))) } td { (view::when(Some(r.last_seen))) }
                            td { @if r.stale_secret { span.badge.warn { "old secret" } } }
                        }
                    } }
                }
            }
        }
        section.card {
            h2 { "Integrations" }
            @if u.integrations.is_empty() { p.muted { "None named yet." } } @else {
                table #integrations {
                    thead { tr { th { "Integration" } th { "Requests" } th { "Denied" } th { "IPs" } th { "First seen" } th { "Last seen" } th {} } }
                    tbody { @for r in &u.integrations {
                        tr {
                            td { (r.name) }
                            td.num { (r.count) } td.num { (r.denied) }
                            td { (r.ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) }
                            td { (view::when(Some(r.first_seen))) } td { (view::when(Some(r.last_seen))) }
                            td { @if r.stale_secret { span.badge.warn { "old secret" } } }
                        }
                    } }
                }
            }
        }
    };
    key_page(&app, &ctx, &info, Tab::Usage, &flash, body)
}

#[derive(Deserialize)]
pub(crate) struct WhitelistQuery {
    #[serde(default)]
    confirm: String,
}

/// `GET /keys/{id}/whitelist`: the Whitelist tab.
pub(crate) async fn whitelist(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<WhitelistQuery>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let key = info.id;
    let wl: Whitelist = match blocking(&app, move |app| app.store.whitelist(&key)).await {
        Ok(w) => w,
        Err(WhitelistError::KeyNotFound(_)) => return view::not_found_page(),
        Err(e) => return view::failed("Reading the whitelist", &e),
    };
    let flash = app.sessions.take_flash(&ctx.session);
    let base = format!("/keys/{}/whitelist", info.id);
    let confirming = q.confirm == "enable" && !wl.enabled && wl.entries.is_empty();
    let body = html! {
        section.card {
            form.toggle method="post" action=(format!("{base}/toggle")) {
                (view::csrf(&ctx))
                input type="hidden" name="enabled" value=(if wl.enabled { "0" } else { "1" });
                button type="submit" role="switch" aria-checked=(if wl.enabled { "true" } else { "false" })
                    class=(if wl.enabled { "switch on" } else { "switch" }) #whitelist-toggle {
                    span.knob {}
                    " Restrict to whitelisted IPs"
                }
            }
            @if wl.enabled {
                p { "Only requests from the addresses below are admitted; every other address is refused and counted on the Usage tab." }
            } @else {
                p.muted { "Off: requests from any address are admitted." }
            }
            @if wl.entries.is_empty() {
                p.warn-text { "There are no entries: with the restriction on, every request would be refused." }
            }
        }
        @if confirming {
            section.card.confirm.warn #whitelist-confirm {
                h2 { "Restrict to an empty whitelist?" }
                p.consequence { strong { "Every request with this key will be refused" } " until an entry is added." }
                form method="post" action=(format!("{base}/toggle")) {
                    (view::csrf(&ctx))
                    input type="hidden" name="enabled" value="1";
                    input type="hidden" name="confirm" value="1";
                    button.danger type="submit" { "Turn on anyway" }
                    " "
                    a.button href=(base) { "Cancel" }
                }
            }
        }
        section.card {
            h2 { "Entries" }
            @if wl.entries.is_empty() { p.muted { "No entries yet." } } @else {
                table #entries {
                    thead { tr { th { "Name" } th { "IP or network" } th { "Added" } th {} } }
                    tbody { @for e in &wl.entries {
                        tr {
                            td { (e.name) }
                            td { code { (e.network) } }
                            td { (view::when(Some(e.created_at))) }
                            td {
                                form method="post" action=(format!("{base}/entries/{}/delete", e.id)) {
                                    (view::csrf(&ctx))
                                    button.link type="submit" aria-label=(format!("Remove {}", e.name)) { "Remove" }
                                }
                            }
                        }
                    } }
                }
            }
            form.inline method="post" action=(format!("{base}/entries")) #add-entry {
                (view::csrf(&ctx))
                label { "Name"
                    input type="text" name="name" required maxlength="100" placeholder="office"
                        value=(view::field_value(&flash, "entry", "name"));
                    (view::field_error(&flash, "entry", "name"))
                }
                label { "IP or CIDR"
                    input type="text" name="network" required placeholder="203.0.113.0/24"
                        value=(view::field_value(&flash, "entry", "network"));
                    (view::field_error(&flash, "entry", "network"))
                }
                button type="submit" { "Add entry" }
            }
        }
    };
    key_page(&app, &ctx, &info, Tab::Whitelist, &flash, body)
}

#[derive(Deserialize)]
pub(crate) struct ToggleForm {
    enabled: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /keys/{id}/whitelist/toggle`: on or off; turning it on with no
/// entries asks first.
pub(crate) async fn whitelist_toggle(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ToggleForm>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let key = info.id;
    let on = form.enabled == "1";
    let confirmed = form.confirm == "1";
    let base = format!("/keys/{key}/whitelist");
    let result = blocking(&app, move |app| {
        if on && !confirmed && app.store.whitelist(&key)?.entries.is_empty() {
            return Ok(false);
        }
        app.store.set_whitelist_enabled(&key, on).map(|_| true)
    })
    .await;
    match result {
        Ok(false) => Redirect::to(&format!("{base}?confirm=enable")).into_response(),
        Ok(true) => {
            notice(
                &app,
                &ctx,
                if on {
                    "The key is restricted to its whitelist."
                } else {
                    "Whitelist restriction off."
                }
                .to_string(),
            );
            Redirect::to(&base).into_response()
        }
        Err(WhitelistError::KeyNotFound(_)) => view::not_found_page(),
        Err(e) => view::failed("Changing the whitelist", &e),
    }
}

#[derive(Deserialize)]
pub(crate) struct EntryForm {
    name: String,
    network: String,
}

/// `POST /keys/{id}/whitelist/entries`: adds a named entry.
pub(crate) async fn whitelist_add(
    State(app): State<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<EntryForm>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let key = info.id;
    let base = format!("/keys/{key}/whitelist");
    let (name, network) = (
        form.name.trim().to_string(),
        form.network.trim().to_string(),
    );
    match blocking(&app, move |app| {
        app.store.add_whitelist_entry(&key, &name, &network)
    })
    .await
    {
        Ok(e) => {
            notice(&app, &ctx, format!("Added {} ({}).", e.name, e.network));
        }
        Err(WhitelistError::KeyNotFound(_)) => return view::not_found_page(),
        Err(e @ WhitelistError::InvalidNetwork(_)) => {
            field_error(&app, &ctx, "entry", "network", e.to_string(), &form.network);
        }
        Err(e @ WhitelistError::InvalidInput(_)) => {
            let field = if e.to_string().contains("name") {
                "name"
            } else {
                "network"
            };
            let value = if field == "name" {
                &form.name
            } else {
                &form.network
            };
            field_error(&app, &ctx, "entry", field, e.to_string(), value);
        }
        Err(e) => return view::failed("Adding the entry", &e),
    }
    Redirect::to(&base).into_response()
}

/// `POST /keys/{id}/whitelist/entries/{entry}/delete`.
pub(crate) async fn whitelist_remove(
    State(app): State<Shared>,
    ctx: Ctx,
    Path((id, entry)): Path<(String, String)>,
) -> Response {
    let info = match load(&app, &id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let key = info.id;
    let base = format!("/keys/{key}/whitelist");
    match blocking(&app, move |app| {
        app.store.remove_whitelist_entry(&key, &entry)
    })
    .await
    {
        Ok(()) | Err(WhitelistError::EntryNotFound { .. }) => {
            notice(&app, &ctx, "Entry removed.".to_string());
            Redirect::to(&base).into_response()
        }
        Err(WhitelistError::KeyNotFound(_)) => view::not_found_page(),
        Err(e) => view::failed("Removing the entry", &e),
    }
}
