//! A PostgreSQL store's URL: libpq's URI form
//! (`postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]`).
//!
//! keyward takes off the parameters it implements itself, `schema` and
//! libpq's TLS parameters (`sslmode` with all of libpq's values,
//! `sslrootcert`, `sslcert`, `sslkey`), and tokio-postgres parses the rest,
//! so every other libpq parameter it knows (`host`, `connect_timeout`,
//! `keepalives_idle`, `tcp_user_timeout`, `options`, ...) keeps its meaning.
//! Values are percent-decoded as libpq does; the parameters passed on are
//! passed byte for byte.
//!
//! As with libpq, the environment fills in what the URL leaves out:
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY` and
//! `PGCONNECT_TIMEOUT`. And as with libpq 16, `sslrootcert=system` makes
//! `verify-full` the default mode and refuses any weaker one.

use percent_encoding::percent_decode_str;

use super::tls::{SslMode, TlsParams};

/// What a store's URL says.
pub(crate) struct StoreUrl {
    /// The connection settings tokio-postgres read.
    pub config: tokio_postgres::Config,
    /// The schema the store's tables live in (`keyward` unless given).
    pub schema: String,
    /// How the connection is secured.
    pub tls: TlsParams,
    /// The names of the parameters the URL gave (to tell a default from a choice).
    pub given: Vec<String>,
}

/// The parameters keyward reads itself.
const OWN: &[&str] = &["schema", "sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Whether `location` names a PostgreSQL store rather than a sled directory.
pub(crate) fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// A store's URL as it may be shown: its schema and database, never its
/// user, password or parameters.
pub(crate) fn describe(url: &str) -> String {
    match parse_with(url, |_| None) {
        Ok(u) => format!(
            "PostgreSQL schema {:?} of database {:?}",
            u.schema,
            u.config.get_dbname().unwrap_or("(default)")
        ),
        Err(_) => "a PostgreSQL URL".to_string(),
    }
}

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| format!("URL parameter {text:?} is not UTF-8 once decoded"))
}

/// The libpq environment variables keyward honours, each with the URL
/// parameter it stands in for when the URL does not give that parameter.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
];

/// Reads a store's URL, with the process's libpq environment variables
/// filling in what it leaves out; the error says what is wrong with it.
pub(crate) fn parse(url: &str) -> Result<StoreUrl, String> {
    parse_with(url, |name| std::env::var(name).ok())
}

/// [`parse`] with the environment given as a lookup.
pub(crate) fn parse_with(
    url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<StoreUrl, String> {
    // In libpq's URI grammar the first '?' starts the parameters: one in a
    // user name, password or database name is percent-encoded.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = "keyward".to_string();
    let mut tls = TlsParams::default();
    let mut mode = None;
    let mut passed: Vec<String> = Vec::new();
    let mut given = Vec::new();
    let mut own = |name: &str, value: String| -> Result<(), String> {
        match name {
            "schema" => schema = value,
            "sslmode" => mode = Some(SslMode::parse(&value)?),
            "sslrootcert" => tls.root_cert = Some(value),
            "sslcert" => tls.cert = Some(value),
            _ => tls.key = Some(value),
        }
        Ok(())
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(raw_name)?;
        if OWN.contains(&name.as_str()) {
            own(&name, decode(raw_value)?)?;
        } else {
            passed.push(pair.to_string());
        }
        given.push(name);
    }
    for &(variable, name) in ENVIRONMENT {
        if given.iter().any(|g| g == name) {
            continue;
        }
        let Some(value) = env(variable) else { continue };
        if OWN.contains(&name) {
            own(name, value).map_err(|e| format!("{variable}: {e}"))?;
        } else {
            // Passed on as the URL parameter, so tokio-postgres reads it
            // exactly as it would read the parameter.
            let encoded =
                percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC);
            passed.push(format!("{name}={encoded}"));
        }
        given.push(name.to_string());
    }
    tls.mode = tls_mode(mode, tls.root_cert.as_deref())?;
    check_schema(&schema)?;
    let rest = if passed.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", passed.join("&"))
    };
    let config: tokio_postgres::Config =
        rest.parse()
            .map_err(|e| match std::error::Error::source(&e) {
                Some(cause) => format!("bad PostgreSQL URL: {e}: {cause}"),
                None => format!("bad PostgreSQL URL: {e}"),
            })?;
    Ok(StoreUrl {
        config,
        schema,
        tls,
        given,
    })
}

/// The mode in force: libpq 16's rule that the platform's roots are only
/// worth trusting with the host name checked.
fn tls_mode(given: Option<SslMode>, root_cert: Option<&str>) -> Result<SslMode, String> {
    match (given, root_cert) {
        (None, Some("system")) => Ok(SslMode::VerifyFull),
        (Some(mode), Some("system")) if mode != SslMode::VerifyFull => Err(format!(
            "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
            mode.name()
        )),
        (mode, _) => Ok(mode.unwrap_or_default()),
    }
}

fn check_schema(schema: &str) -> Result<(), String> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.as_bytes()[0].is_ascii_lowercase()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema {schema:?} must match [a-z][a-z0-9_]{{0,47}}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_described_without_its_credentials() {
        let shown =
            describe("postgresql://app:s3cret@db.example:5433/keys?schema=prod&sslmode=require");
        assert_eq!(shown, "PostgreSQL schema \"prod\" of database \"keys\"");
        assert_eq!(
            describe("postgresql://u:p@h/x?sslmode=bogus"),
            "a PostgreSQL URL"
        );
    }

    #[test]
    fn keywards_parameters_come_off_and_the_rest_reaches_tokio_postgres() {
        let u = parse(
            "postgres://u:p%3Fw@h:5433/db?schema=acme&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a%20b&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(u.schema, "acme");
        assert_eq!(u.tls.mode, SslMode::VerifyFull);
        assert_eq!(u.tls.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(u.config.get_password(), Some(&b"p?w"[..]));
        assert_eq!(u.config.get_application_name(), Some("a b"));
        assert_eq!(
            u.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert!(u.given.iter().any(|g| g == "connect_timeout"));
        assert_eq!(parse("postgres://h/db").unwrap().schema, "keyward");
        assert_eq!(parse("postgres://h/db").unwrap().tls.mode, SslMode::Prefer);
    }

    #[test]
    fn bad_schemas_modes_and_parameters_are_refused() {
        assert!(parse("postgres://h/db?schema=Robert';drop").is_err());
        let e = parse("postgres://h/db?sslmode=sometimes").err().unwrap();
        assert!(e.contains("sslmode"), "{e}");
        let e = parse("postgres://h/db?frobnicate=1").err().unwrap();
        assert!(e.contains("frobnicate"), "{e}");
        assert!(parse("postgres://h/db?sslrootcert=%FF").is_err());
    }

    fn parse_in(url: &str, env: &[(&str, &str)]) -> Result<StoreUrl, String> {
        parse_with(url, |name| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_string())
        })
    }

    #[test]
    fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes_as_libpq_16() {
        let u = parse_in("postgres://h/db?sslrootcert=system", &[]).unwrap();
        assert_eq!(u.tls.mode, SslMode::VerifyFull);
        for weak in ["disable", "prefer", "require", "verify-ca"] {
            let e = parse_in(
                &format!("postgres://h/db?sslrootcert=system&sslmode={weak}"),
                &[],
            )
            .err()
            .unwrap();
            assert_eq!(
                e,
                format!(
                    "weak sslmode \"{weak}\" may not be used with sslrootcert=system (use \"verify-full\")"
                )
            );
            // The same from the environment, either half of it.
            assert!(
                parse_in("postgres://h/db?sslrootcert=system", &[("PGSSLMODE", weak)]).is_err()
            );
            assert!(
                parse_in(
                    &format!("postgres://h/db?sslmode={weak}"),
                    &[("PGSSLROOTCERT", "system")]
                )
                .is_err()
            );
        }
        let u = parse_in(
            "postgres://h/db?sslmode=verify-full",
            &[("PGSSLROOTCERT", "system")],
        )
        .unwrap();
        assert_eq!(u.tls.mode, SslMode::VerifyFull);
        assert_eq!(u.tls.root_cert.as_deref(), Some("system"));
    }

    #[test]
    fn libpq_environment_variables_fill_in_what_the_url_leaves_out() {
        let env = [
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", "/etc/env-ca.pem"),
            ("PGSSLCERT", "/etc/env-client.crt"),
            ("PGSSLKEY", "/etc/env-client.key"),
            ("PGCONNECT_TIMEOUT", "7"),
        ];
        let u = parse_in("postgres://h/db", &env).unwrap();
        assert_eq!(u.tls.mode, SslMode::VerifyCa);
        assert_eq!(u.tls.root_cert.as_deref(), Some("/etc/env-ca.pem"));
        assert_eq!(u.tls.cert.as_deref(), Some("/etc/env-client.crt"));
        assert_eq!(u.tls.key.as_deref(), Some("/etc/env-client.key"));
        assert_eq!(
            u.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        assert!(u.given.iter().any(|g| g == "connect_timeout"));
        // The URL wins over the environment, parameter by parameter.
        let u = parse_in(
            "postgres://h/db?sslmode=require&sslrootcert=%2Furl.pem&connect_timeout=3",
            &env,
        )
        .unwrap();
        assert_eq!(u.tls.mode, SslMode::Require);
        assert_eq!(u.tls.root_cert.as_deref(), Some("/url.pem"));
        assert_eq!(u.tls.cert.as_deref(), Some("/etc/env-client.crt"));
        assert_eq!(
            u.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        // A bad value is refused, naming the variable.
        let e = parse_in("postgres://h/db", &[("PGSSLMODE", "sometimes")])
            .err()
            .unwrap();
        assert!(e.contains("PGSSLMODE"), "{e}");
        assert!(parse_in("postgres://h/db", &[("PGCONNECT_TIMEOUT", "soon")]).is_err());
    }
}
