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

use super::http::{self, Egress, HttpLimits, HttpRequest};
use crate::events::Event;
use crate::manifest::Manifest;

mod bindings {
    wasmtime::component::bindgen!({
        world: "notifier",
        path: "plugins/wit",
    });
}

use self::bindings::keyward::notifier::host::{Level, Request, Response};
use self::bindings::keyward::notifier::{host as wit_host, types as wit_types};
use self::bindings::{DeliveryError, Event as WitEvent, Notifier, NotifierPre};

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

impl wit_types::Host for HostState {}

impl wit_host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.log_line(level, &message);
    }

    fn config(&mut self, name: String) -> Option<String> {
        self.config.get(&name).cloned()
    }

    fn http(&mut self, req: Request) -> Result<Response, String> {
        let call = HttpRequest {
            method: &req.method,
            url: &req.url,
            headers: &req.headers,
            body: &req.body,
        };
        match http::perform(&call, &self.egress, self.deadline, &self.http_limits) {
            Ok(r) => Ok(Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(e) => {
                self.log_line(
                    "host",
                    &format!("http {} refused or failed: {e}", req.method),
                );
                Err(e)
            }
        }
    }
}

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
    pre: NotifierPre<HostState>,
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
        Notifier::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
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
        let pre = NotifierPre::new(instance_pre)
            .map_err(|e| format!("the component is not a keyward notifier: {e}"))?;
        Ok(Loaded {
            manifest,
            identity,
            egress,
            pre,
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
    pub(crate) fn deliver(&self, plugin: &Loaded, event: &Event) -> Delivery {
        match catch_unwind(AssertUnwindSafe(|| self.deliver_once(plugin, event))) {
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

    fn deliver_once(&self, plugin: &Loaded, event: &Event) -> Delivery {
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
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (m.timeout().as_millis() / EPOCH_TICK.as_millis()).max(1);
        // The deadline is set before instantiation: start-up code counts too.
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        let outcome = plugin
            .pre
            .instantiate(&mut store)
            .and_then(|bindings| bindings.call_on_event(&mut store, &wit_event(event)));
        match outcome {
            Ok(Ok(())) => Delivery::Delivered,
            Ok(Err(DeliveryError::Retryable(why))) => Delivery::Retryable(why),
            Ok(Err(DeliveryError::Permanent(why))) => Delivery::Permanent(why),
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

fn wit_event(e: &Event) -> WitEvent {
    WitEvent {
        seq: e.seq,
        kind: e.kind.as_str().to_string(),
        at: e.at.to_string(),
        key_id: e.key_id.to_string(),
        key_name: e.name.clone(),
        masked_key: e.masked.clone(),
        data: e.data.to_string(),
    }
}
