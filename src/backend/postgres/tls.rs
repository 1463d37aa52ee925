//! TLS to PostgreSQL through rustls, with libpq's `sslmode` meanings:
//!
//! | `sslmode`     | encrypted          | server certificate checked            |
//! |---------------|--------------------|---------------------------------------|
//! | `disable`     | no                 | -                                     |
//! | `prefer` (default) | if the server offers | against root certificates if any are found |
//! | `require`     | yes                | against root certificates if any are found |
//! | `verify-ca`   | yes                | chain to a root certificate           |
//! | `verify-full` | yes                | chain, and the host name              |
//!
//! Root certificates come from `sslrootcert` (a PEM file, or `system` for
//! the platform's, read as rustls-native-certs does), else
//! `~/.postgresql/root.crt` when it exists. A client certificate comes from
//! `sslcert` and `sslkey` (PEM), else `~/.postgresql/postgresql.crt` and
//! `.key` when they exist. As with libpq, a root certificate file that does
//! not exist is an error only for `verify-ca` and `verify-full`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow (plaintext first) is not supported: use prefer, require, verify-ca or verify-full".into(),
                );
            }
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether it must get it.
    pub(crate) fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            SslMode::Disable => Wire::Disable,
            SslMode::Prefer => Wire::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS parameters of a store's URL.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsParams {
    pub mode: SslMode,
    pub root_cert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

fn default_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql").join(name))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The root certificates the URL names or libpq's default file holds, if any.
fn roots(params: &TlsParams) -> Result<Option<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    let path = match params.root_cert.as_deref() {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unparsable platform certificate does not void the rest.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(
                    "sslrootcert=system: the platform has no usable root certificates".into(),
                );
            }
            return Ok(Some(store));
        }
        Some(path) => PathBuf::from(path),
        None => match default_file("root.crt") {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    if !path.exists() {
        if matches!(params.mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err(format!(
                "sslmode={} needs root certificates, and {} does not exist (name a PEM file with sslrootcert=, or sslrootcert=system)",
                params.mode.name(),
                path.display()
            ));
        }
        return Ok(None);
    }
    for cert in read_certs(&path)? {
        store
            .add(cert)
            .map_err(|e| format!("{}: not a usable root certificate: {e}", path.display()))?;
    }
    Ok(Some(store))
}

/// The client certificate and key the URL names or libpq's default files hold.
fn client_identity(
    params: &TlsParams,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    let cert = match &params.cert {
        Some(p) => PathBuf::from(p),
        None => match default_file("postgresql.crt") {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    if !cert.exists() {
        return Ok(None);
    }
    let key = match &params.key {
        Some(p) => PathBuf::from(p),
        None => default_file("postgresql.key").unwrap_or_default(),
    };
    let certs = read_certs(&cert)?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| format!("cannot read the client key {}: {e}", key.display()))?;
    Ok(Some((certs, key)))
}

/// The TLS connector for a store's connections.
pub(crate) fn connector(params: &TlsParams) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if params.mode == SslMode::Disable {
        Arc::new(AnyCertificate(Arc::clone(&provider)))
    } else {
        match roots(params)? {
            Some(roots) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| format!("TLS: {e}"))?;
                if params.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
            None => Arc::new(AnyCertificate(Arc::clone(&provider))),
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_identity(params)? {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `prefer` and `require` without root certificates: encrypted, the
/// server's certificate not checked (libpq's meaning), the handshake's
/// signatures still are.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with root certificates): the chain
/// must lead to a root certificate; the name in it is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last: a name mismatch
        // means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_need_root_certificates_and_say_where_they_looked() {
        let params = TlsParams {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/keyward-root.crt".into()),
            ..TlsParams::default()
        };
        let e = connector(&params).err().unwrap();
        assert!(
            e.contains("/nonexistent/keyward-root.crt") && e.contains("verify-full"),
            "{e}"
        );
        // libpq's meaning: require without a root file encrypts unchecked.
        let params = TlsParams {
            mode: SslMode::Require,
            ..params
        };
        assert!(connector(&params).is_ok());
    }

    #[test]
    fn a_file_that_is_not_pem_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.crt");
        std::fs::write(&path, "not a certificate").unwrap();
        let params = TlsParams {
            mode: SslMode::VerifyCa,
            root_cert: Some(path.display().to_string()),
            ..TlsParams::default()
        };
        let e = connector(&params).err().unwrap();
        assert!(e.contains("root.crt"), "{e}");
    }
}
