//! The Overview tab: the key's details, and regenerate and delete behind
//! a confirmation page, disable, enable, rename, expiry.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use keyward::{KeyError, Timestamp, Usage};
use maud::{Markup, html};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::super::view::{Ctx, Flash, NewKey};
use super::super::{Shared, blocking, keys, view};
use super::{Key, Tab, change, changed, changed_field, field_error, key_page, notice};

/// Clients seen this recently are named before a regeneration.
const RECENT: Duration = Duration::from_hours(7 * 24);

/// The grace periods a regeneration offers, in seconds.
const GRACES: [(u64, &str); 4] = [
    (0, "none: the current key stops working immediately"),
    (3_600, "1 hour"),
    (86_400, "24 hours"),
    (604_800, "7 days"),
];

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
pub(crate) async fn overview(State(app): State<Shared>, ctx: Ctx, Key(info): Key) -> Response {
    let flash = app.sessions.take_flash(&ctx.session);
    let base = format!("/keys/{}", info.id);
    let body = html! {
        @if let Some(new) = flash.new_key.as_ref().filter(|n| n.id == info.id) {
            (new_key_banner(new))
        }
        dl.details {
            @for (label, value) in crate::keys::overview_rows(&info, Timestamp::now()) {
                dt { (label) } dd { (view::shown(&value)) }
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
    Key(info): Key,
    Query(q): Query<GraceQuery>,
) -> Response {
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
    Key(info): Key,
    Form(form): Form<GraceForm>,
) -> Response {
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
    Key(info): Key,
) -> Response {
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
pub(crate) async fn delete(State(app): State<Shared>, ctx: Ctx, Key(info): Key) -> Response {
    let key = info.id;
    match blocking(&app, move |app| app.store.delete(&key)).await {
        Ok(()) | Err(KeyError::NotFound(_)) => {
            notice(&app, &ctx, format!("Deleted {}.", info.name));
            Redirect::to("/keys").into_response()
        }
        Err(e) => view::failed("Deleting the key", &e),
    }
}

pub(crate) async fn disable(State(app): State<Shared>, ctx: Ctx, Key(info): Key) -> Response {
    let done = "Disabled: the key admits nobody.";
    changed(
        change(app, &ctx, &info, done, |app, k| {
            app.store.set_disabled(k, true)
        })
        .await,
    )
}

pub(crate) async fn enable(State(app): State<Shared>, ctx: Ctx, Key(info): Key) -> Response {
    changed(
        change(app, &ctx, &info, "Enabled.", |app, k| {
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
    Key(info): Key,
    Form(form): Form<RenameForm>,
) -> Response {
    let name = form.name.trim().to_string();
    let r = change(Arc::clone(&app), &ctx, &info, "Renamed.", move |app, k| {
        app.store.rename(k, &name)
    })
    .await;
    changed_field(&app, &ctx, r, ("rename", "name", &form.name))
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
    Key(info): Key,
    Form(form): Form<ExpiryForm>,
) -> Response {
    let at = if form.action == "clear" {
        None
    } else {
        match keys::parse_date(&form.expires) {
            Ok(t) => Some(t),
            Err(m) => {
                field_error(&app, &ctx, "expiry", "expires", m, &form.expires);
                return Redirect::to(&format!("/keys/{}", info.id)).into_response();
            }
        }
    };
    let done = if at.is_some() {
        "Expiry set."
    } else {
        "Expiry removed."
    };
    let r = change(Arc::clone(&app), &ctx, &info, done, move |app, k| {
        app.store.set_expiry(k, at)
    })
    .await;
    changed_field(&app, &ctx, r, ("expiry", "expires", &form.expires))
}
