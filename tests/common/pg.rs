//! The local PostgreSQL server over TCP: a login role with a password made
//! once per run (the tests' URL is a superuser's, over a Unix socket).
#![allow(dead_code)]

use std::sync::OnceLock;

const ROLE: &str = "keyward_tcp_test";

/// What the tests need to know about the server.
pub struct Server {
    pub admin_url: String,
    pub port: u16,
    pub database: String,
    pub password: String,
    /// The certificate the server presents (readable: it is public).
    pub cert_file: String,
}

pub fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("admin connection")
}

/// The server, with a login role for TCP made once per run; `None` (a
/// skip, a failure under CI=true) without `KEYWARD_TEST_PG`.
pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Server> = OnceLock::new();
    let base = crate::common::service("KEYWARD_TEST_PG", "the PostgreSQL network tests")?;
    Some(SERVER.get_or_init(|| {
        let mut a = admin(&base);
        let row = a
            .query_one(
                "select current_database(), current_setting('port'), current_setting('ssl'), current_setting('ssl_cert_file')",
                &[],
            )
            .unwrap();
        let (database, port, ssl, cert_file): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(
            ssl, "on",
            "the test server must have ssl = on (Debian's default cluster has it)"
        );
        let password: String = (0..24)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        a.batch_execute(&format!(
            "do $$ begin create role {ROLE} login; exception when duplicate_object then null; end $$;
             alter role {ROLE} password '{password}';
             grant connect, create on database {database} to {ROLE};"
        ))
        .unwrap();
        Server {
            admin_url: base,
            port: port.parse().unwrap(),
            database,
            password,
            cert_file,
        }
    }))
}

pub fn unique(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{name}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl Server {
    /// A store URL over TCP to `host:port` with the given extra parameters.
    pub fn url(&self, host: &str, port: u16, params: &str) -> String {
        format!(
            "postgresql://{ROLE}:{}@{host}:{port}/{}?schema={}&{params}",
            self.password,
            self.database,
            unique("net")
        )
    }

    /// Whether each of the sessions named `app` is encrypted.
    pub fn encrypted(&self, app: &str) -> Vec<bool> {
        admin(&self.admin_url)
            .query(
                "select s.ssl from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = $1",
                &[&app],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}
