//! `keyward events [--key ID] [--owner O] [--actor A] [--kind K]... [--since
//! N|7d|TIME] [--until 1d|TIME] [--follow]`: the event outbox, and the
//! audit trail through its index.

use crate::shown;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use keyward::{Event, EventKind, EventQuery, Store, Timestamp};

use crate::{Out, Result, failure, invalid, key_id};

/// Which events to show.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct EventsArgs {
    /// Only events after this event number, or at or after this time: a
    /// duration back from now (`7d`, `12h`) or an RFC 3339 time.
    #[arg(long, default_value = "0")]
    since: String,
    /// Only events before this time: a duration back from now or an RFC
    /// 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only this key's events.
    #[arg(long = "key", value_name = "ID")]
    key_id: Option<String>,
    /// Only the events of this account's keys.
    #[arg(long)]
    owner: Option<String>,
    /// Only changes made by this actor (`cli:alice`, `admin panel`, ...).
    #[arg(long)]
    actor: Option<String>,
    /// Only events of this kind (`key.regenerated`, ...); repeat for several.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Newest first.
    #[arg(long, conflicts_with = "follow")]
    newest_first: bool,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep printing new events (re-reads the store every second).
    #[arg(long)]
    pub(crate) follow: bool,
}

/// A time argument: a duration back from now, or an RFC 3339 time.
fn time_ago(what: &str, s: &str) -> Result<Timestamp> {
    if let Ok(d) = humantime::parse_duration(s) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(Timestamp::from_unix_millis(
            Timestamp::now().unix_millis().saturating_sub(ms),
        ));
    }
    Timestamp::parse_rfc3339(s).map_err(|_| {
        invalid(format!(
            "{what} {s:?}: expected a duration back from now (7d) or an RFC 3339 time"
        ))
    })
}

/// The filters the command line and the panel both take, as text.
#[derive(Default)]
pub(crate) struct Filters<'a> {
    pub key: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub kinds: Vec<&'a str>,
    /// A duration back from now or an RFC 3339 time (both also for `until`).
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
}

impl Filters<'_> {
    /// `q` narrowed by them, or what is wrong with one.
    pub(crate) fn apply(&self, mut q: EventQuery) -> Result<EventQuery> {
        if let Some(id) = self.key {
            q = q.key(key_id(id)?);
        }
        if let Some(owner) = self.owner {
            q = q.owner(owner);
        }
        if let Some(actor) = self.actor {
            q = q.actor(actor);
        }
        for kind in &self.kinds {
            let k = EventKind::from_name(kind).ok_or_else(|| {
                invalid(format!(
                    "kind {kind:?} is not an event kind (one of {})",
                    EventKind::NAMES.join(", ")
                ))
            })?;
            q = q.kind(k);
        }
        if let Some(since) = self.since {
            q = q.since_time(time_ago("since", since)?);
        }
        if let Some(until) = self.until {
            q = q.until_time(time_ago("until", until)?);
        }
        Ok(q)
    }
}

impl EventsArgs {
    /// The query these arguments make (a page of `limit`).
    fn query(&self) -> Result<EventQuery> {
        // A bare number is an event number, as it always was.
        let after = self.since.parse::<u64>().ok();
        let filters = Filters {
            key: self.key_id.as_deref(),
            owner: self.owner.as_deref(),
            actor: self.actor.as_deref(),
            kinds: self.kinds.iter().map(String::as_str).collect(),
            since: after.is_none().then_some(self.since.as_str()),
            until: self.until.as_deref(),
        };
        let mut q = filters.apply(EventQuery::new())?;
        if let Some(seq) = after {
            q = q.after(seq);
        }
        if self.newest_first {
            q = q.newest_first();
        }
        Ok(q)
    }
}

/// Every event the query finds, page by page, up to `limit`; `each` sees
/// them in order.
fn each_event(
    store: &Store,
    mut q: EventQuery,
    limit: Option<usize>,
    each: &mut dyn FnMut(&Event),
) -> Result<u64> {
    let mut shown = 0usize;
    let mut last = q.after.unwrap_or(0);
    loop {
        let room = limit.map_or(keyward::MAX_PAGE, |l| (l - shown).min(keyward::MAX_PAGE));
        if room == 0 {
            return Ok(last);
        }
        let page = store.events_query(&q.clone().limit(room))?;
        for e in &page.events {
            each(e);
            last = last.max(e.seq);
        }
        shown += page.events.len();
        match page.next {
            Some(n) if q.newest_first => q.before = Some(n),
            Some(n) => q.after = Some(n),
            None => return Ok(last),
        }
    }
}

/// Prints the events the arguments ask for.
pub(crate) fn events_command(store: &Store, args: &EventsArgs, out: &Out) -> Result<u8> {
    let mut found = Vec::new();
    each_event(store, args.query()?, args.limit, &mut |e| {
        if out.json {
            found.push(e.clone());
        } else {
            print_event(e);
        }
    })?;
    if out.json {
        out.json(&found);
    }
    Ok(0)
}

fn print_event(e: &keyward::Event) {
    println!(
        "{:>6}  {}  {:<22} {} {:<20} {}",
        e.seq,
        e.at,
        e.kind.as_str(),
        e.key_id,
        shown::text(&e.name),
        shown::json(e.data.to_string())
    );
}

pub(crate) fn follow_events(path: &Path, args: &EventsArgs, out: &Out) -> Result<u8> {
    let mut query = args.query()?;
    // Held open: attached to the store's owner, or owning it (and then
    // delivering to its plugins too).
    let store = crate::open_store(path)?;
    loop {
        let last = each_event(&store, query.clone(), None, &mut |e| {
            if out.json {
                println!(
                    "{}",
                    shown::json(serde_json::to_string(e).expect("serialises"))
                );
            } else {
                print_event(e);
            }
        })?;
        query.after = Some(last);
        std::io::stdout()
            .flush()
            .map_err(|e| failure(crate::exit_code(keyward::ErrorKind::Storage), e.to_string()))?;
        std::thread::sleep(Duration::from_secs(1));
    }
}
