//! The Whitelist tab: the toggle and the named entries.

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use keyward::{Whitelist, WhitelistError};
use maud::html;
use serde::Deserialize;

use super::super::view;
use super::super::view::Ctx;
use super::super::{Shared, blocking};
use super::{Key, Tab, field_error, key_page, notice};

#[derive(Deserialize)]
pub(crate) struct WhitelistQuery {
    #[serde(default)]
    confirm: String,
}

/// `GET /keys/{id}/whitelist`: the Whitelist tab.
pub(crate) async fn whitelist(
    State(app): State<Shared>,
    ctx: Ctx,
    Key(info): Key,
    Query(q): Query<WhitelistQuery>,
) -> Response {
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
    Key(info): Key,
    Form(form): Form<ToggleForm>,
) -> Response {
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
    Key(info): Key,
    Form(form): Form<EntryForm>,
) -> Response {
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
    Key(info): Key,
    Path((_, entry)): Path<(String, String)>,
) -> Response {
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
