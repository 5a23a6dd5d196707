//! TLS on `serve`'s replication link, the server side of MySQL's upgrade:
//! the greeting offers `CLIENT_SSL`, a client that wants TLS answers with
//! a 32-byte SSLRequest (read with the pre-login packet cap), the TCP
//! stream is handed to rustls, and the real handshake response follows
//! over TLS with the same framing, limits and sequence ids. With a CA,
//! clients must present a certificate it signed (as MariaDB's `REQUIRE
//! X509`); with `require`, plain logins are refused.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// `CLIENT_SSL`, offered in the greeting and set in an SSLRequest.
pub const CLIENT_SSL: u32 = 0x800;

/// What `serve` answers a replica that logs in without TLS under
/// `require`: MySQL's ER_SECURE_TRANSPORT_REQUIRED (MariaDB itself only
/// says "Access denied"), with what to do.
pub const PLAIN_REFUSED: (u16, &str, &str) = (
    3159,
    "HY000",
    "Connections using insecure transport are prohibited while replseed serve runs with --require-ssl: set MASTER_SSL=1",
);

/// The server's certificate and key, and whom it accepts.
#[derive(Clone)]
pub struct ServeTls {
    acceptor: TlsAcceptor,
    /// Plain logins are refused.
    pub require: bool,
}

impl std::fmt::Debug for ServeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeTls")
            .field("require", &self.require)
            .finish_non_exhaustive()
    }
}

fn bad(what: &str, path: &Path, detail: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{what} {}: {detail}", path.display()),
    )
}

fn certs(what: &str, path: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| bad(what, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(what, path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

impl ServeTls {
    /// Reads the PEM certificate chain, its key, and an optional CA for
    /// client certificates. Errors name the file and what is wrong with it.
    pub fn load(
        cert: &Path,
        key: &Path,
        ca: Option<&Path>,
        require: bool,
    ) -> std::io::Result<ServeTls> {
        let chain = certs("the certificate file", cert)?;
        let pem = std::fs::read(key).map_err(|e| bad("the key file", key, e))?;
        let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            bad(
                "the key file",
                key,
                format!("no unencrypted PEM private key in it ({e})"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?;
        let builder = match ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs("the CA file", ca)? {
                    roots.add(c).map_err(|e| {
                        bad("the CA file", ca, format!("not a CA certificate ({e})"))
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| bad("the CA file", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key_der).map_err(|e| {
            bad(
                "the key file",
                key,
                format!("does not go with the certificate {} ({e})", cert.display()),
            )
        })?;
        Ok(ServeTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            require,
        })
    }

    /// The TLS handshake on an accepted connection.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> std::io::Result<Link> {
        let s = self.acceptor.accept(tcp).await?;
        Ok(Link::Tls(Box::new(s)))
    }
}

/// A client connection, before or after the upgrade.
pub(crate) enum Link {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// While the TCP stream is with rustls (and after a failed handshake).
    Gone,
}

impl Link {
    /// The protocol version and cipher suite, for the log; `None` when plain.
    pub fn tls_params(&self) -> Option<(String, String)> {
        let Link::Tls(s) = self else { return None };
        let c = s.get_ref().1;
        Some((
            c.protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            c.negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
        ))
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the connection was lost in the TLS handshake",
    )
}

impl AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Link::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Link::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Link::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Link::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_flush(cx),
            Link::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Link::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Link::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Link::Gone => Poll::Ready(Err(gone())),
        }
    }
}
