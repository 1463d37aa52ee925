//! One connection to PostgreSQL, used synchronously, every call under a
//! deadline. tokio-postgres speaks the protocol; each connection has a
//! single-threaded runtime of its own that runs only while its owner waits
//! on a call, so a pooled connection costs no thread. A call that misses its
//! deadline (a black-holed server, a dead network) fails, and its connection
//! is never used again: what it was doing is unknown.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::backend::StorageError;

/// How to open connections to one store's server.
#[derive(Clone)]
pub(crate) struct Connector {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// The longest one call may take before the connection is given up.
    pub deadline: Duration,
    /// The longest opening a connection (TCP, TLS, authentication) may take.
    pub connect_timeout: Duration,
}

/// Why a call failed.
pub(crate) enum CallError {
    /// The server answered with an error, or the connection broke.
    Postgres(tokio_postgres::Error),
    /// No answer within the deadline.
    TimedOut(Duration),
}

impl From<tokio_postgres::Error> for CallError {
    fn from(e: tokio_postgres::Error) -> Self {
        CallError::Postgres(e)
    }
}

impl From<CallError> for StorageError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Postgres(e) => StorageError::with_source("postgres", e),
            CallError::TimedOut(d) => StorageError::new(format!(
                "PostgreSQL did not answer within {} ms (server or network unreachable); the outcome of the call is unknown",
                d.as_millis()
            )),
        }
    }
}

pub(crate) struct Conn {
    runtime: Runtime,
    client: Client,
    /// One message per NOTIFY received, for a connection that LISTENs.
    notified: mpsc::UnboundedReceiver<()>,
    deadline: Duration,
    /// False once a call missed its deadline.
    sound: bool,
}

impl Connector {
    /// Opens a connection (TCP or Unix socket, TLS as the URL says, authentication).
    pub(crate) fn connect(&self) -> Result<Conn, StorageError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StorageError::with_source("cannot start PostgreSQL's I/O", e))?;
        let opening = self.config.connect(self.tls.clone());
        let (client, mut connection) = runtime
            .block_on(async { tokio::time::timeout(self.connect_timeout, opening).await })
            .map_err(|_| {
                StorageError::new(format!(
                    "cannot connect to PostgreSQL: no answer within {} ms",
                    self.connect_timeout.as_millis()
                ))
            })?
            .map_err(|e| StorageError::with_source("cannot connect to PostgreSQL", e))?;
        let (tx, notified) = mpsc::unbounded_channel();
        runtime.spawn(async move {
            // Drives the connection while its owner waits on a call;
            // notifications go to the owner, notices are dropped.
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Conn {
            runtime,
            client,
            notified,
            deadline: self.deadline,
            sound: true,
        })
    }
}

impl Conn {
    /// Whether the connection may be used again.
    pub(crate) fn is_usable(&self) -> bool {
        self.sound && !self.client.is_closed()
    }

    /// Runs `call` on this connection within the deadline.
    pub(crate) fn call<T>(
        &mut self,
        call: impl AsyncFnOnce(&mut Client) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let deadline = self.deadline;
        let Conn {
            runtime, client, ..
        } = self;
        let outcome = runtime.block_on(bounded(deadline, call(client)));
        if matches!(outcome, Err(CallError::TimedOut(_))) {
            self.sound = false;
        }
        outcome
    }

    /// Waits up to `timeout` for a notification; true when one came (all
    /// that came are taken). `None` means the connection is gone.
    pub(crate) fn wait_for_notification(&mut self, timeout: Duration) -> Option<bool> {
        let Conn {
            runtime, notified, ..
        } = self;
        match runtime.block_on(async { tokio::time::timeout(timeout, notified.recv()).await }) {
            Ok(Some(())) => {
                while notified.try_recv().is_ok() {}
                Some(true)
            }
            Ok(None) => None,
            Err(_) => Some(false),
        }
    }
}

async fn bounded<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or(Err(CallError::TimedOut(deadline)))
}
