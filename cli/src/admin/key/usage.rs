//! The Usage tab: client addresses and integrations, refusals by reason,
//! clients still presenting an old secret, the hourly chart, and the last
//! verifications one by one.

use axum::extract::State;
use axum::response::Response;
use keyward::Timestamp;
use maud::html;

use super::super::view;
use super::super::view::Ctx;
use super::super::{Shared, blocking, chart};
use super::{Key, Tab, key_page};

/// `GET /keys/{id}/usage`: the Usage tab.
pub(crate) async fn usage(State(app): State<Shared>, ctx: Ctx, Key(info): Key) -> Response {
    let key = info.id;
    let read = blocking(&app, move |app| {
        Ok::<_, keyward::KeyError>((app.store.usage(&key)?, app.store.recent_requests(&key)?))
    });
    let (u, recent) = match read.await {
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
        section.card {
            h2 { "Recent requests" }
            p.muted { "The last " (keyward::RECENT_PER_KEY) " verifications of this key, newest first." }
            @if recent.is_empty() { p.muted { "No requests yet." } } @else {
                table #recent {
                    thead { tr { th { "Time" } th { "Client" } th { "Integration" } th { "Result" } th { "Scope asked" } th {} } }
                    tbody { @for r in &recent {
                        tr class=[(!r.allowed).then_some("denied")] {
                            td { (view::moment(r.at)) }
                            td { code { (r.ip) } }
                            td { (r.integration.as_deref().unwrap_or("—")) }
                            td data-reason=[r.reason.as_deref()] { (crate::usage::result(r)) }
                            td { (r.scope.as_deref().unwrap_or("—")) }
                            td { @if r.stale_secret { span.badge.warn { "old secret" } } }
                        }
                    } }
                }
            }
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
