//! The keys page: every key (or one account's) a page at a time, searched
//! by id, name or owner, and the *Create key* form.

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use keyward::{CreateOptions, KeyError, KeyId, KeyInfo, Store, Timestamp};
use maud::{Markup, html};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::view::{self, Nav};
use super::view::{Ctx, FieldError, Flash, NewKey};
use super::{Shared, blocking};

/// Keys on one page.
const PAGE: usize = 50;

/// Keys one search request reads at most before it offers to go on: a
/// search of a million keys is a series of bounded requests.
const SEARCH_SCAN: usize = 20_000;

#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    owner: String,
    after: Option<String>,
}

/// One page of the list: its keys, where the next starts, how many were read.
struct Found {
    keys: Vec<KeyInfo>,
    next: Option<KeyId>,
    scanned: usize,
}

fn matches(info: &KeyInfo, needle: &str) -> bool {
    info.name.to_lowercase().contains(needle)
        || info.id.to_string().to_lowercase().contains(needle)
        || info
            .owner
            .as_deref()
            .is_some_and(|o| o.to_lowercase().contains(needle))
}

fn find(
    store: &Store,
    owner: Option<&str>,
    q: &str,
    after: Option<KeyId>,
) -> Result<Found, KeyError> {
    // An id finds its key at once; a name that merely looks like an id
    // is searched for as a name.
    if after.is_none()
        && let Ok(id) = q.parse::<KeyId>()
    {
        match store.get(&id) {
            Ok(info) if owner.is_none_or(|o| info.owner.as_deref() == Some(o)) => {
                return Ok(Found {
                    keys: vec![info],
                    next: None,
                    scanned: 1,
                });
            }
            Ok(_) | Err(KeyError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if q.is_empty() {
        let page = store.list_page(owner, after.as_ref(), PAGE)?;
        let scanned = page.keys.len();
        return Ok(Found {
            keys: page.keys,
            next: page.next,
            scanned,
        });
    }
    let needle = q.to_lowercase();
    let mut found = Found {
        keys: Vec::new(),
        next: after,
        scanned: 0,
    };
    loop {
        let page = store.list_page(owner, found.next.as_ref(), 1_000)?;
        found.next = page.next;
        for info in page.keys {
            found.scanned += 1;
            if matches(&info, &needle) {
                found.keys.push(info);
                if found.keys.len() == PAGE {
                    found.next = found.keys.last().map(|k| k.id);
                    return Ok(found);
                }
            }
        }
        if found.next.is_none() || found.scanned >= SEARCH_SCAN {
            return Ok(found);
        }
    }
}

/// Whether `q` is a whole key rather than an id, name or owner: it is not
/// searched for (and the page says why), since a search is a URL.
fn looks_like_a_key(q: &str) -> bool {
    q.len() > 40
        && q.split('_').count() >= 3
        && q.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `GET /keys`: the list.
pub(crate) async fn list(
    State(app): State<Shared>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Response {
    let flash = app.sessions.take_flash(&ctx.session);
    let q = query.q.trim().to_string();
    let pasted_key = looks_like_a_key(&q);
    let owner_filter = match &app.owner {
        Some(o) => Some(o.clone()),
        None => Some(query.owner.trim().to_string()).filter(|o| !o.is_empty()),
    };
    let after = query.after.as_deref().and_then(|a| a.parse::<KeyId>().ok());
    let search = if pasted_key { String::new() } else { q.clone() };
    let owner = owner_filter.clone();
    let result = blocking(&app, move |app| {
        find(&app.store, owner.as_deref(), &search, after)
    })
    .await;
    let found = match result {
        Ok(f) => f,
        Err(e) => return view::failed("Listing keys", &e),
    };
    let now = Timestamp::now();
    let next_link = found.next.map(|next| {
        let mut pairs = form_urlencoded::Serializer::new(String::new());
        if !q.is_empty() && !pasted_key {
            pairs.append_pair("q", &q);
        }
        if app.owner.is_none()
            && let Some(o) = &owner_filter
        {
            pairs.append_pair("owner", o);
        }
        pairs.append_pair("after", &next.to_string());
        format!("/keys?{}", pairs.finish())
    });
    let body = html! {
        div.heading {
            h1 { "API keys" }
            a.button.primary href="#create" { "Create key" }
        }
        form.search method="get" action="/keys" role="search" {
            input type="search" name="q" value=(if pasted_key { "" } else { q.as_str() })
                placeholder="Search by name, id or owner" aria-label="Search keys";
            @if app.owner.is_none() {
                input type="text" name="owner" value=[owner_filter.as_deref()]
                    placeholder="Owner (account id)" aria-label="Filter by owner";
            }
            button type="submit" { "Search" }
            @if !q.is_empty() || (app.owner.is_none() && owner_filter.is_some()) {
                a href="/keys" { "Clear" }
            }
        }
        @if pasted_key {
            p.field-error role="alert" { "That looks like a whole key: search by its id (the part after the prefix), never by the key itself." }
        }
        (table(&found.keys, now))
        p.pager {
            @if found.keys.is_empty() {
                span.muted { "No keys" @if !q.is_empty() { " match" } "." }
            }
            @if !q.is_empty() && found.scanned > found.keys.len() {
                span.muted { " Searched " (found.scanned) " keys." }
            }
            @if let Some(link) = &next_link {
                " " a href=(link) { "Next page →" }
            }
        }
        (create_form(&app, &ctx, &flash))
    };
    view::page(&app, &ctx, Nav::Keys, "API keys", &flash, body)
}

fn table(keys: &[KeyInfo], now: Timestamp) -> Markup {
    html! {
        table.keys {
            thead { tr {
                th { "Name" } th { "Owner" } th { "Key" } th { "Status" }
                th { "Created" } th { "Last rotated" } th { "Last used" } th { "Whitelist" }
            } }
            tbody {
                @for k in keys {
                    @let (status, class) = view::status(k, now);
                    tr {
                        td { a href=(format!("/keys/{}", k.id)) { (k.name) } }
                        td { @if let Some(o) = &k.owner { (o) } @else { span.muted { "—" } } }
                        td { code { (k.masked) } }
                        td { span class=(format!("badge {class}")) { (status) } }
                        td { (view::when(Some(k.created_at))) }
                        td { (view::when(k.rotated_at)) }
                        td { (view::when(k.last_used_at)) }
                        td { @if k.whitelist_enabled { "on" } @else { span.muted { "off" } } }
                    }
                }
            }
        }
    }
}

fn create_form(app: &Shared, ctx: &Ctx, flash: &Flash) -> Markup {
    html! {
        section.card #create {
            h2 { "Create key" }
            form method="post" action="/keys" {
                (view::csrf(ctx))
                label { "Name"
                    input type="text" name="name" required maxlength="200"
                        value=(view::field_value(flash, "create", "name"));
                    (view::field_error(flash, "create", "name"))
                }
                @if app.owner.is_none() {
                    label { "Owner (optional account id)"
                        input type="text" name="owner" maxlength="128"
                            value=(view::field_value(flash, "create", "owner"));
                        (view::field_error(flash, "create", "owner"))
                    }
                }
                label { "Expires (optional)"
                    input type="date" name="expires" value=(view::field_value(flash, "create", "expires"));
                    (view::field_error(flash, "create", "expires"))
                }
                label { "Whitelist (optional): one entry per line, a name then an IP or CIDR"
                    textarea name="whitelist" rows="3" placeholder="office 203.0.113.0/24" {
                        (view::field_value(flash, "create", "whitelist"))
                    }
                    (view::field_error(flash, "create", "whitelist"))
                }
                button.primary type="submit" { "Create key" }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CreateForm {
    name: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    whitelist: String,
}

/// `YYYY-MM-DD` (the date input): the key stops working at 00:00 UTC that day.
pub(crate) fn parse_date(s: &str) -> Result<Timestamp, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s.trim(), &format)
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))?;
    let at = date.midnight().assume_utc();
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    Ok(Timestamp::from_unix_millis(
        i64::try_from(ms).map_err(|_| "out of range".to_string())?,
    ))
}

/// The form field an error of [`Store::create`] is about.
fn create_field(e: &KeyError) -> &'static str {
    let text = e.to_string();
    if text.contains("owner") {
        "owner"
    } else if text.contains("key name") {
        "name"
    } else if text.contains("expires") {
        "expires"
    } else {
        "whitelist"
    }
}

/// `POST /keys`: creates the key and shows it once on its Overview.
pub(crate) async fn create(
    State(app): State<Shared>,
    ctx: Ctx,
    Form(form): Form<CreateForm>,
) -> Response {
    let refuse = |field: &'static str, message: String, value: &str| {
        app.sessions.set_flash(
            &ctx.session,
            Flash {
                error: Some(FieldError {
                    form: "create",
                    field,
                    message,
                    value: value.to_string(),
                }),
                ..Flash::default()
            },
        );
        Redirect::to("/keys#create").into_response()
    };
    let mut options = CreateOptions::new();
    let owner = app
        .owner
        .clone()
        .or_else(|| Some(form.owner.trim().to_string()).filter(|o| !o.is_empty()));
    if let Some(o) = owner {
        options = options.owner(o);
    }
    if !form.expires.trim().is_empty() {
        match parse_date(&form.expires) {
            Ok(at) => options = options.expires_at(at),
            Err(m) => return refuse("expires", m, &form.expires),
        }
    }
    for line in form
        .whitelist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let Some((name, network)) = line.rsplit_once(char::is_whitespace) else {
            return refuse(
                "whitelist",
                format!("{line:?}: a name, then an IP address or CIDR network"),
                &form.whitelist,
            );
        };
        options = options.restrict_to(name.trim(), network.trim());
    }
    let name = form.name.trim().to_string();
    let created = blocking(&app, move |app| app.store.create(&name, options)).await;
    match created {
        Ok(c) => {
            let id = c.info.id;
            app.sessions.set_flash(
                &ctx.session,
                Flash {
                    new_key: Some(NewKey {
                        id,
                        key: Zeroizing::new(c.key.as_str().to_string()),
                        regenerated: false,
                    }),
                    ..Flash::default()
                },
            );
            Redirect::to(&format!("/keys/{id}")).into_response()
        }
        Err(e @ KeyError::InvalidInput(_)) => {
            let field = create_field(&e);
            let value = match field {
                "name" => form.name.clone(),
                "owner" => form.owner.clone(),
                "expires" => form.expires.clone(),
                _ => form.whitelist.clone(),
            };
            refuse(field, e.to_string(), &value)
        }
        Err(e) => view::failed("Creating the key", &e),
    }
}
