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

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| format!("URL parameter {text:?} is not UTF-8 once decoded"))
}

/// Reads a store's URL; the error says what is wrong with it.
pub(crate) fn parse(url: &str) -> Result<StoreUrl, String> {
    // In libpq's URI grammar the first '?' starts the parameters: one in a
    // user name, password or database name is percent-encoded.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = "keyward".to_string();
    let mut tls = TlsParams::default();
    let mut passed = Vec::new();
    let mut given = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(raw_name)?;
        if !OWN.contains(&name.as_str()) {
            given.push(name);
            passed.push(pair);
            continue;
        }
        let value = decode(raw_value)?;
        match name.as_str() {
            "schema" => schema = value,
            "sslmode" => tls.mode = SslMode::parse(&value)?,
            "sslrootcert" => tls.root_cert = Some(value),
            "sslcert" => tls.cert = Some(value),
            _ => tls.key = Some(value),
        }
        given.push(name);
    }
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
}
