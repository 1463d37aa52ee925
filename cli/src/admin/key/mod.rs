//! One key: the page every tab shares and what the tabs' actions share;
//! each tab and its actions in a file of its own — [`overview`] (details,
//! regenerate and delete behind a confirmation page, disable, enable,
//! rename, expiry), [`usage`] and [`whitelist`] (the toggle and entries).

mod overview;
mod usage;
mod whitelist;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use keyward::{KeyError, KeyId, KeyInfo, Timestamp};
use maud::{Markup, html};

pub(crate) use self::overview::{
    delete, delete_confirm, disable, enable, expiry, overview, regenerate, regenerate_confirm,
    rename,
};
pub(crate) use self::usage::usage;
pub(crate) use self::whitelist::{whitelist, whitelist_add, whitelist_remove, whitelist_toggle};
use super::view::{self, Nav};
use super::view::{Ctx, FieldError, Flash};
use super::{App, Shared, blocking, parse_id};

/// Which tab of the key page is open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Tab {
    Overview,
    Usage,
    Whitelist,
}

/// The key of the path, if this panel may show it.
/// The key a `/keys/{id}/...` page is about, loaded (and one the panel
/// may show); a page that cannot have it answers "not found" or the
/// failure instead.
pub(crate) struct Key(pub KeyInfo);

impl FromRequestParts<Shared> for Key {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, Response> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let id = params
            .iter()
            .find_map(|(name, value)| (name == "id").then_some(value.as_str()))
            .unwrap_or_default();
        load(app, id).await.map(Key)
    }
}

pub(super) async fn load(app: &Shared, id: &str) -> Result<KeyInfo, Response> {
    let id = parse_id(id)?;
    let info = blocking(app, move |app| app.store.get(&id)).await;
    match info {
        Ok(info) if app.visible(&info) => Ok(info),
        Ok(_) | Err(KeyError::NotFound(_)) => Err(view::not_found_page()),
        Err(e) => Err(view::failed("Reading the key", &e)),
    }
}

pub(super) fn key_page(
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

pub(super) fn notice(app: &App, ctx: &Ctx, text: String) {
    app.sessions.set_flash(
        &ctx.session,
        Flash {
            notice: Some(text),
            ..Flash::default()
        },
    );
}

pub(super) fn field_error(
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
pub(super) async fn change(
    app: Shared,
    ctx: &Ctx,
    info: &KeyInfo,
    done: &'static str,
    f: impl FnOnce(&App, &KeyId) -> Result<KeyInfo, KeyError> + Send + 'static,
) -> Result<Response, (KeyError, String)> {
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

pub(super) fn changed(r: Result<Response, (KeyError, String)>) -> Response {
    r.unwrap_or_else(|(e, _)| view::failed("Changing the key", &e))
}

/// A change a form asked for: done, or a refused value back in the form's
/// `field` with the message.
pub(super) fn changed_field(
    app: &App,
    ctx: &Ctx,
    r: Result<Response, (KeyError, String)>,
    (form, field, value): (&'static str, &'static str, &str),
) -> Response {
    match r {
        Err((e @ KeyError::InvalidInput(_), back)) => {
            field_error(app, ctx, form, field, e.to_string(), value);
            Redirect::to(&back).into_response()
        }
        r => changed(r),
    }
}
