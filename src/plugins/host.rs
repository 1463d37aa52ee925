//! The wasmtime side: the engine, the sandbox, and one delivery.
//!
//! Each delivery runs in a fresh wasmtime `Store` whose state holds the
//! plugin's granted capabilities (its config and what its calls may
//! reach), a cap on all its memories and tables together and a deadline
//! (an epoch deadline for its own code, the same instant for its HTTP
//! calls); the only way out of the sandbox is `host.http`, which the host
//! performs after checking the origin and the address. A panic inside a
//! delivery is that delivery's failure, nobody else's.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, ResourceLimiter};

use super::http::{self, Egress, HttpLimits, HttpRequest, HttpResponse};
use super::signing::{self, Signer};
use crate::events::Event;
use crate::manifest::{Manifest, SIGNING_SECRET};
use crate::time::Timestamp;

/// The notifier API, one module per version this host runs: `v0_1` is
/// frozen (plugins built against it keep working), `v0_2` is the newest
/// (`plugins/wit/notifier.wit`).
mod v0_1 {
    wasmtime::component::bindgen!({
        world: "notifier",
        path: "plugins/wit/0.1.0",
    });
}

mod v0_2 {
    wasmtime::component::bindgen!({
        world: "notifier",
        path: "plugins/wit",
    });
}

/// What a component is instantiated as: the API version its manifest declares.
enum NotifierPre {
    V0_1(v0_1::NotifierPre<HostState>),
    V0_2(v0_2::NotifierPre<HostState>),
}

/// How often the epoch advances: the granularity of delivery time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Lines of plugin log kept in memory per plugin.
const LOG_LINES: usize = 200;

/// A plugin's log: what it wrote with `host.log`, and what the host refused it.
#[derive(Default)]
pub(crate) struct PluginLog {
    lines: VecDeque<String>,
}

impl PluginLog {
    pub(crate) fn push(&mut self, line: String) {
        if self.lines.len() == LOG_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// Bytes a table element is counted as against the memory cap (a pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// One budget for everything an instance allocates: the sum of all its
/// linear memories and tables (however many it has) stays under the cap.
struct Limiter {
    cap: usize,
    used: usize,
}

impl Limiter {
    fn grow(&mut self, from: usize, to: usize) -> bool {
        let after = self.used.saturating_add(to.saturating_sub(from));
        if after > self.cap {
            return false;
        }
        self.used = after;
        true
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        256
    }

    fn tables(&self) -> usize {
        256
    }

    fn memories(&self) -> usize {
        64
    }
}

/// The state of one delivery's wasmtime store: the plugin's grants.
pub(crate) struct HostState {
    name: String,
    config: std::collections::BTreeMap<String, String>,
    egress: Egress,
    /// When the delivery's time is up: its HTTP calls end by then too.
    deadline: Instant,
    limits: Limiter,
    http_limits: HttpLimits,
    log: Arc<Mutex<PluginLog>>,
    /// The event's delivery id (`webhook-id`) and the attempt's time.
    delivery_id: String,
    at: Timestamp,
    signer: Option<Arc<Signer>>,
}

impl HostState {
    fn log_line(&self, level: &str, message: &str) {
        let clipped: String = message.chars().take(2000).collect();
        let line = format!(
            "{} {level} {}: {clipped}",
            crate::time::Timestamp::now(),
            self.name
        );
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }
}

impl HostState {
    fn config_value(&self, name: &str) -> Option<String> {
        if name == SIGNING_SECRET {
            return None;
        }
        self.config.get(name).cloned()
    }

    fn http_call(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<HttpResponse, String> {
        let with_signature;
        let headers = match &self.signer {
            Some(signer) => {
                with_signature = signer.sign(
                    headers,
                    &self.delivery_id,
                    self.at.unix_millis().div_euclid(1000),
                    body,
                );
                &with_signature[..]
            }
            None => headers,
        };
        let call = HttpRequest {
            method,
            url,
            headers,
            body,
        };
        http::perform(&call, &self.egress, self.deadline, &self.http_limits).inspect_err(|e| {
            self.log_line("host", &format!("http {method} refused or failed: {e}"));
        })
    }
}

/// The host interface of one API version, implemented by the one above.
macro_rules! host_interface {
    ($v:ident) => {
        impl $v::keyward::notifier::types::Host for HostState {}

        impl $v::keyward::notifier::host::Host for HostState {
            fn log(&mut self, level: $v::keyward::notifier::host::Level, message: String) {
                use $v::keyward::notifier::host::Level;
                let level = match level {
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                self.log_line(level, &message);
            }

            fn config(&mut self, name: String) -> Option<String> {
                self.config_value(&name)
            }

            fn http(
                &mut self,
                req: $v::keyward::notifier::host::Request,
            ) -> Result<$v::keyward::notifier::host::Response, String> {
                self.http_call(&req.method, &req.url, &req.headers, &req.body)
                    .map(|r| $v::keyward::notifier::host::Response {
                        status: r.status,
                        headers: r.headers,
                        body: r.body,
                    })
            }
        }
    };
}

host_interface!(v0_1);
host_interface!(v0_2);

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    Delivered,
    Retryable(String),
    Permanent(String),
}

/// A compiled plugin, ready to instantiate per delivery.
pub(crate) struct Loaded {
    pub manifest: Manifest,
    /// Which installation this is (its component, manifest and grants):
    /// a reinstall, in any process, is a different one.
    pub identity: String,
    pub egress: Egress,
    pre: NotifierPre,
    /// Signs its requests when its manifest asks.
    signer: Option<Arc<Signer>>,
    pub log: Arc<Mutex<PluginLog>>,
}

/// The engine shared by every plugin of a store, and its epoch ticker.
pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
    pub(crate) http_limits: HttpLimits,
}

impl Runtime {
    pub(crate) fn new(cache_dir: Option<PathBuf>) -> Result<Runtime, String> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| format!("starting wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        v0_1::Notifier::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .and_then(|()| v0_2::Notifier::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s))
            .map_err(|e| format!("linking the host interface: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("keyward-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| format!("starting the epoch thread: {e}"))?
        };
        if let Some(dir) = &cache_dir {
            let _ = std::fs::create_dir_all(dir);
        }
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
            stop,
            ticker: Some(ticker),
            http_limits: HttpLimits::default(),
        })
    }

    fn cache_path(&self, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let engine_hash = h.finish();
        let wasm_hash = blake3::hash(wasm).to_hex();
        Some(dir.join(format!("{}-{engine_hash:016x}.cwasm", &wasm_hash[..32])))
    }

    /// Compiles (or loads the cached compilation of) a component, and checks
    /// that it is a notifier of the manifest's API version.
    pub(crate) fn load(
        &self,
        wasm: &[u8],
        manifest: Manifest,
        identity: String,
        egress: Egress,
    ) -> Result<Loaded, String> {
        let component = self.compile(wasm)?;
        let ty = component.component_type();
        // Every keyward:notifier interface it imports must be of the manifest's version.
        for (name, _) in ty.imports(&self.engine) {
            if let Some(rest) = name.strip_prefix("keyward:notifier/")
                && rest.rsplit_once('@').is_none_or(|(_, v)| v != manifest.api)
            {
                return Err(format!(
                    "the component imports {name}, but its manifest declares api {}",
                    manifest.api
                ));
            }
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("the component is not a keyward notifier: {e}"))?;
        let not_notifier = |e| format!("the component is not a keyward notifier: {e}");
        let pre = match manifest.api.as_str() {
            "0.1.0" => {
                NotifierPre::V0_1(v0_1::NotifierPre::new(instance_pre).map_err(not_notifier)?)
            }
            _ => NotifierPre::V0_2(v0_2::NotifierPre::new(instance_pre).map_err(not_notifier)?),
        };
        let secrets = manifest.signing_secrets()?;
        let signer = (!secrets.is_empty()).then(|| Arc::new(Signer::new(secrets)));
        Ok(Loaded {
            manifest,
            identity,
            egress,
            pre,
            signer,
            log: Arc::new(Mutex::new(PluginLog::default())),
        })
    }

    fn compile(&self, wasm: &[u8]) -> Result<Component, String> {
        if let Some(path) = self.cache_path(wasm)
            && path.exists()
        {
            // SAFETY: the file was written by Component::serialize of this
            // engine configuration (its hash is in the name) in a directory
            // private to the store (0700).
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, &path) } {
                return Ok(c);
            }
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| format!("not a valid WebAssembly component: {e}"))?;
        if let Some(path) = self.cache_path(wasm)
            && let Ok(bytes) = component.serialize()
        {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Ok(component)
    }

    /// Delivers one event in a fresh sandbox. A panic in the host while
    /// doing so is a failed attempt, retried like any other.
    /// `id_key` makes the delivery id (see [`signing::delivery_id`]); `at`
    /// is the attempt's time, the `webhook-timestamp` of signed requests.
    pub(crate) fn deliver(
        &self,
        plugin: &Loaded,
        event: &Event,
        id_key: &[u8; 32],
        at: Timestamp,
    ) -> Delivery {
        let id = signing::delivery_id(id_key, &plugin.manifest.name, event.seq);
        match catch_unwind(AssertUnwindSafe(|| {
            self.deliver_once(plugin, event, id, at)
        })) {
            Ok(d) => d,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let why = format!("the host failed on this delivery: {what}");
                plugin.note(&why);
                Delivery::Retryable(why)
            }
        }
    }

    fn deliver_once(&self, plugin: &Loaded, event: &Event, id: String, at: Timestamp) -> Delivery {
        let m = &plugin.manifest;
        let memory = usize::try_from(m.memory_limit_mb).unwrap_or(64) * 1024 * 1024;
        let state = HostState {
            name: m.name.clone(),
            config: m.config.clone(),
            egress: plugin.egress.clone(),
            deadline: Instant::now() + m.timeout(),
            limits: Limiter {
                cap: memory,
                used: 0,
            },
            http_limits: self.http_limits,
            log: Arc::clone(&plugin.log),
            delivery_id: id.clone(),
            at,
            signer: plugin.signer.clone(),
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (m.timeout().as_millis() / EPOCH_TICK.as_millis()).max(1);
        // The deadline is set before instantiation: start-up code counts too.
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        let outcome = match &plugin.pre {
            NotifierPre::V0_1(pre) => pre
                .instantiate(&mut store)
                .and_then(|b| b.call_on_event(&mut store, &v0_1_event(event)))
                .map(|r| {
                    r.map_err(|e| match e {
                        v0_1::DeliveryError::Retryable(why) => Delivery::Retryable(why),
                        v0_1::DeliveryError::Permanent(why) => Delivery::Permanent(why),
                    })
                }),
            NotifierPre::V0_2(pre) => pre
                .instantiate(&mut store)
                .and_then(|b| b.call_on_event(&mut store, &v0_2_event(event, id)))
                .map(|r| {
                    r.map_err(|e| match e {
                        v0_2::DeliveryError::Retryable(why) => Delivery::Retryable(why),
                        v0_2::DeliveryError::Permanent(why) => Delivery::Permanent(why),
                    })
                }),
        };
        match outcome {
            Ok(Ok(())) => Delivery::Delivered,
            Ok(Err(failed)) => failed,
            Err(trap) => {
                let why = match trap.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => {
                        format!("timed out after {} ms", m.timeout_ms)
                    }
                    Some(t) => format!("trapped: {t}"),
                    None => format!("failed: {trap:#}"),
                };
                plugin.note(&why);
                Delivery::Retryable(why)
            }
        }
    }
}

impl Loaded {
    /// A line of the host's about this plugin, in its log.
    pub(crate) fn note(&self, what: &str) {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!(
                "{} host {}: {what}",
                crate::time::Timestamp::now(),
                self.manifest.name
            ));
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

fn v0_1_event(e: &Event) -> v0_1::Event {
    v0_1::Event {
        seq: e.seq,
        kind: e.kind.as_str().to_string(),
        at: e.at.to_string(),
        key_id: e.key_id.to_string(),
        key_name: e.name.clone(),
        masked_key: e.masked.clone(),
        data: e.data.to_string(),
    }
}

fn v0_2_event(e: &Event, id: String) -> v0_2::Event {
    v0_2::Event {
        seq: e.seq,
        id,
        kind: e.kind.as_str().to_string(),
        at: e.at.to_string(),
        key_id: e.key_id.to_string(),
        key_name: e.name.clone(),
        masked_key: e.masked.clone(),
        data: e.data.to_string(),
    }
}
