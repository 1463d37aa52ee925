//! The panel's layout, its embedded assets, and how values are shown.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward::{KeyId, KeyInfo, Timestamp};
use zeroize::Zeroizing;

use crate::keys::Shown;
use maud::{DOCTYPE, Markup, html};

use super::App;

pub(crate) const LOGIN_NEEDED: &str =
    "Log in with the URL `keyward admin` printed when it started.";

/// Which page of the navigation is open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Keys,
    Events,
    Plugins,
}

const STYLESHEET: &str = include_str!("panel.css");
const SCRIPT: &str = include_str!("panel.js");

pub(crate) async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

const ICON: &str = include_str!("icon.svg");

pub(crate) async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], ICON).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · keyward" }
        link rel="icon" href="/favicon.ico" type="image/svg+xml";
        link rel="stylesheet" href="/assets/panel.css";
        script src="/assets/panel.js" defer {}
    }
}

/// The plaintext of a key just created or regenerated, shown by the next page only.
pub(crate) struct NewKey {
    pub id: KeyId,
    pub key: Zeroizing<String>,
    pub regenerated: bool,
}

/// A form field's error, with the value to put back.
pub(crate) struct FieldError {
    pub form: &'static str,
    pub field: &'static str,
    pub message: String,
    pub value: String,
}

/// What a POST tells the page its redirect leads to.
#[derive(Default)]
pub(crate) struct Flash {
    pub notice: Option<String>,
    pub new_key: Option<NewKey>,
    pub error: Option<FieldError>,
}

/// The session of the request, put there by `auth::guard`.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub session: String,
    pub csrf: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| refused(StatusCode::UNAUTHORIZED, LOGIN_NEEDED))
    }
}

/// A page of the panel: navigation, the flash notice, the body.
pub(crate) fn page(
    app: &App,
    ctx: &Ctx,
    nav: Nav,
    title: &str,
    flash: &Flash,
    body: Markup,
) -> Response {
    let markup = html! {
        (head(title))
        header.top {
            a.brand href="/keys" { "keyward" }
            @if let Some(owner) = &app.owner {
                span.account { "Account " strong { (owner) } }
            }
            nav {
                a href="/keys" class=[(nav == Nav::Keys).then_some("active")] { "API keys" }
                a href="/events" class=[(nav == Nav::Events).then_some("active")] { "Events" }
                @if plugins_page(app) {
                    a href="/plugins" class=[(nav == Nav::Plugins).then_some("active")] { "Plugins" }
                }
            }
            form.logout method="post" action="/logout" {
                (csrf(ctx))
                button.link type="submit" { "Log out" }
            }
        }
        main {
            @if let Some(notice) = &flash.notice {
                p.notice role="status" { (notice) }
            }
            (body)
        }
    };
    html_response(StatusCode::OK, markup)
}

/// Whether this panel has a Plugins page (not in one account's panel).
pub(crate) fn plugins_page(app: &App) -> bool {
    cfg!(feature = "plugins") && app.owner.is_none()
}

fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A page that refuses the request, without navigation.
pub(crate) fn refused(status: StatusCode, message: &str) -> Response {
    let markup = html! {
        (head(status.canonical_reason().unwrap_or("Refused")))
        main.refused {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p { (message) }
        }
    };
    html_response(status, markup)
}

pub(crate) fn not_found_page() -> Response {
    refused(StatusCode::NOT_FOUND, "There is no such page or key here.")
}

pub(crate) async fn not_found() -> Response {
    not_found_page()
}

/// A server error, said without details (they go to stderr).
pub(crate) fn failed(what: &str, error: &dyn std::fmt::Display) -> Response {
    eprintln!("keyward admin: {what}: {error}");
    refused(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("{what} failed: {error}"),
    )
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// `2026-11-30 09:14 UTC`, with the exact time as a tooltip; `never`.
pub(crate) fn when(t: Option<Timestamp>) -> Markup {
    match t {
        None => html! { span.muted { "never" } },
        Some(t) => stamp(t, 16),
    }
}

/// A moment to the second (requests one by one), the full time its title.
pub(crate) fn moment(t: Timestamp) -> Markup {
    stamp(t, 19)
}

/// `t` shown as its date and the first `end` characters of its RFC 3339
/// form's time (16: minutes, 19: seconds).
fn stamp(t: Timestamp, end: usize) -> Markup {
    let full = t.to_string();
    let short = format!("{} {} UTC", &full[..10], &full[11..end]);
    html! { time datetime=(full) title=(full) { (short) } }
}

/// A key's state as the keys page shows it: its word and its colour.
pub(crate) fn status(info: &KeyInfo, now: Timestamp) -> (&'static str, &'static str) {
    let word = crate::keys::status(info, now);
    (word, status_class(word))
}

fn status_class(word: &str) -> &'static str {
    match word {
        "active" => "good",
        "in grace" => "warn",
        _ => "bad",
    }
}

/// One value of a key's Overview (see [`crate::keys::overview_rows`]).
pub(crate) fn shown(value: &Shown<'_>) -> Markup {
    let unset = |word: &str| html! { span.muted { (word) } };
    match value {
        Shown::Code(c) => html! { code { (c) } },
        Shown::Text(Some(t), _) => html! { (t) },
        Shown::Text(None, word) => unset(word),
        Shown::Number(n) => html! { (n) },
        Shown::Time(None, word) if !word.is_empty() => unset(word),
        Shown::Time(t, _) => when(*t),
        Shown::Status(s) => html! { span class=(format!("badge {}", status_class(s))) { (s) } },
        Shown::Whitelist(on) => html! { @if *on { "on" } @else { "off" } },
        Shown::Limits(limits) => html! {
            @if limits.is_empty() { (unset("none")) }
            @for l in *limits {
                span.limit { (l.name) " " (l.limit) " per " (humantime::format_duration(l.window).to_string()) } " "
            }
        },
        Shown::Quota(None) => unset("none"),
        Shown::Quota(q) => html! { (crate::limits::quota_text(*q)) },
        Shown::Scopes(scopes) => html! {
            @if scopes.is_empty() { (unset("none")) }
            @for s in *scopes { code { (s) } " " }
        },
        Shown::Metadata(Some(m)) => {
            html! { pre { (serde_json::to_string_pretty(m).unwrap_or_default()) } }
        }
        Shown::Metadata(None) => unset("none"),
    }
}

/// A field's error message, when the flash holds one for it.
pub(crate) fn field_error(flash: &Flash, form: &str, field: &str) -> Markup {
    html! {
        @if let Some(e) = flash.error.as_ref().filter(|e| e.form == form && e.field == field) {
            span.field-error role="alert" id=(format!("{form}-{field}-error")) { (e.message) }
        }
    }
}

/// The value to put back in a field whose input was refused.
pub(crate) fn field_value<'a>(flash: &'a Flash, form: &str, field: &str) -> &'a str {
    flash
        .error
        .as_ref()
        .filter(|e| e.form == form && e.field == field)
        .map_or("", |e| e.value.as_str())
}
