//! TLS for every connection, spelled as MariaDB and MySQL clients spell it:
//! `?ssl-mode=disabled|preferred|required|verify-ca|verify-identity`, with
//! `ssl-ca`, `ssl-cert` and `ssl-key` paths, as parameters of a server URL.
//!
//! * `preferred` (the default): TLS when the server offers it, without
//!   checking its certificate; plain otherwise.
//! * `required`: TLS or nothing, certificate not checked.
//! * `verify-ca`: the certificate must chain to `ssl-ca`.
//! * `verify-identity`: and name the host connected to.
//!
//! The TLS stack is rustls (with aws-lc-rs, which object_store's S3 client
//! already brings): no OpenSSL to link, so the binary stays static and
//! dependency-light.

use std::path::PathBuf;

use mysql_async::{ClientIdentity, SslOpts};

/// How a connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never.
    Disabled,
    /// When the server offers it (the default).
    #[default]
    Preferred,
    /// Always; the certificate is not checked.
    Required,
    /// Always, with a certificate signed by `ssl-ca`.
    VerifyCa,
    /// Always, with a certificate signed by `ssl-ca` for the host's name.
    VerifyIdentity,
}

impl TlsMode {
    /// Parses an `ssl-mode` value.
    pub fn parse(v: &str) -> Option<TlsMode> {
        Some(match v.to_ascii_lowercase().replace('_', "-").as_str() {
            "disabled" => TlsMode::Disabled,
            "preferred" => TlsMode::Preferred,
            "required" => TlsMode::Required,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-identity" => TlsMode::VerifyIdentity,
            _ => return None,
        })
    }

    /// Whether the certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyIdentity)
    }
}

/// The TLS settings of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// The mode.
    pub mode: TlsMode,
    /// CA certificate(s), PEM.
    pub ca: Option<PathBuf>,
    /// Client certificate, PEM.
    pub cert: Option<PathBuf>,
    /// Client key, PEM.
    pub key: Option<PathBuf>,
}

/// The URL parameters this module reads (the rest go to the driver).
pub const PARAMS: &[&str] = &["ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"];

impl Tls {
    /// From the URL's `ssl-*` parameters; an error says which is wrong.
    pub fn from_params<'a>(
        params: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<Tls, String> {
        let mut tls = Tls::default();
        for (k, v) in params {
            match k.replace('_', "-").as_str() {
                "ssl-mode" => {
                    tls.mode = TlsMode::parse(v).ok_or_else(|| {
                        format!("ssl-mode={v} is not one of disabled, preferred, required, verify-ca, verify-identity")
                    })?
                }
                "ssl-ca" => tls.ca = Some(PathBuf::from(v)),
                "ssl-cert" => tls.cert = Some(PathBuf::from(v)),
                "ssl-key" => tls.key = Some(PathBuf::from(v)),
                _ => {}
            }
        }
        if tls.mode.verifies() && tls.ca.is_none() {
            return Err(format!(
                "ssl-mode={} needs ssl-ca=PATH (the CA that signed the server's certificate)",
                if tls.mode == TlsMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-identity"
                }
            ));
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err("ssl-cert and ssl-key go together".into());
        }
        for p in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
            if !p.is_file() {
                return Err(format!("{} does not exist or is not a file", p.display()));
            }
        }
        Ok(tls)
    }

    /// The driver's TLS options, `None` for `disabled`.
    pub fn ssl_opts(&self) -> Option<SslOpts> {
        if self.mode == TlsMode::Disabled {
            return None;
        }
        let mut o = SslOpts::default();
        if let Some(ca) = &self.ca {
            o = o.with_root_certs(vec![ca.clone().into()]);
        }
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            o = o.with_client_identity(Some(ClientIdentity::new(
                c.clone().into(),
                k.clone().into(),
            )));
        }
        match self.mode {
            TlsMode::Preferred | TlsMode::Required => o
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
            TlsMode::VerifyCa => o.with_danger_skip_domain_validation(true),
            _ => o,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_their_checks() {
        let t = Tls::from_params([("ssl-mode", "REQUIRED")].into_iter()).unwrap();
        assert_eq!(t.mode, TlsMode::Required);
        assert!(Tls::from_params([("ssl-mode", "verify-ca")].into_iter())
            .unwrap_err()
            .contains("ssl-ca"));
        assert!(Tls::from_params([("ssl-mode", "sometimes")].into_iter()).is_err());
        assert!(Tls::from_params([("ssl-ca", "/nonexistent/ca.pem")].into_iter()).is_err());
        assert_eq!(
            Tls::from_params(std::iter::empty()).unwrap().mode,
            TlsMode::Preferred
        );
        assert!(Tls {
            mode: TlsMode::Disabled,
            ..Default::default()
        }
        .ssl_opts()
        .is_none());
    }
}
