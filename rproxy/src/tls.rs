//! gRPC over TLS (rustls) for the origin's and the RProxy's servers, with
//! optional client-certificate authentication (mTLS). Signatures already make
//! the maps tamper-evident; TLS adds confidentiality and protects the
//! publisher's bearer token and the subscriber list on the wire.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The TLS flags shared by `altocast-server` and `altocast-rproxy`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "ALTOCAST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "ALTOCAST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "ALTOCAST_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if !pem.starts_with(b"-----BEGIN") && !String::from_utf8_lossy(&pem).contains("-----BEGIN") {
        bail!("{what} {} is not a PEM file", path.display());
    }
    Ok(pem)
}

impl TlsArgs {
    /// The server TLS settings, or `None` for plain HTTP/2. Checked before
    /// binding: both halves of the identity, readable PEM files.
    pub fn server_config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => {
                if self.tls_client_ca.is_some() {
                    bail!("--tls-client-ca needs --tls-cert and --tls-key");
                }
                return Ok(None);
            }
            (Some(c), Some(k)) => (read(c, "--tls-cert")?, read(k, "--tls-key")?),
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.tls_client_ca {
            cfg = cfg.client_ca_root(Certificate::from_pem(read(ca, "--tls-client-ca")?));
        }
        Ok(Some(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_an_identity_or_a_non_pem_file_is_refused_with_the_flag_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let only_cert = TlsArgs { tls_cert: Some(junk.clone()), ..Default::default() };
        assert!(only_cert.server_config().expect_err("half").to_string().contains("--tls-key"));
        let ca_alone = TlsArgs { tls_client_ca: Some(junk.clone()), ..Default::default() };
        assert!(ca_alone.server_config().expect_err("ca alone").to_string().contains("--tls-client-ca"));
        let junk_pair = TlsArgs { tls_cert: Some(junk.clone()), tls_key: Some(junk), ..Default::default() };
        assert!(junk_pair.server_config().expect_err("junk").to_string().contains("not a PEM"));
        assert!(TlsArgs::default().server_config().expect("plain").is_none());
    }
}
