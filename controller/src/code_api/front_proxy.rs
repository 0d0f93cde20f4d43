//! Who is calling. The API server proxies requests for the code API with its front-proxy client
//! certificate and names the caller in headers (`X-Remote-User`, `X-Remote-Group`,
//! `X-Remote-Extra-*`), as it does for every aggregated API (metrics-server, KubeVirt's
//! subresources). The headers are believed only on a connection whose client certificate the
//! front-proxy CA signed and whose name the API server allows; what it publishes for that is in
//! `kube-system/extension-apiserver-authentication`.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use axum::http::HeaderMap;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// The API server's front-proxy settings.
#[derive(Clone, Debug, Default)]
pub struct FrontProxy {
    /// PEM of the CA that signs the proxy's client certificate.
    pub ca_pem: String,
    /// Names the proxy's certificate may carry; empty allows any the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

/// The verified client certificate of one connection, if it had one.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The certificate's common name.
    pub common_name: Option<String>,
}

impl Peer {
    /// The peer of a connection whose client certificate (if any) rustls verified against the
    /// front-proxy CA.
    pub fn of(certificates: Option<&[CertificateDer<'_>]>) -> Self {
        let common_name = certificates.and_then(|c| c.first()).and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            let cn = cert.subject().iter_common_name().next()?;
            cn.as_str().ok().map(str::to_string)
        });
        Self { common_name }
    }
}

/// The caller the API server authenticated.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl FrontProxy {
    /// Reads what the API server publishes; fails when it serves no front proxy (then no
    /// aggregated API can work, and the error says which flags are missing).
    pub async fn load(client: &Client) -> anyhow::Result<Self> {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get("extension-apiserver-authentication")
            .await
            .context("read kube-system/extension-apiserver-authentication")?;
        let data = cm.data.unwrap_or_default();
        let list = |key: &str| -> Vec<String> {
            data.get(key)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default()
        };
        let Some(ca_pem) = data.get("requestheader-client-ca-file").cloned() else {
            bail!(
                "the API server has no front proxy (requestheader-client-ca-file is missing from \
                 kube-system/extension-apiserver-authentication): start it with \
                 --requestheader-client-ca-file and --proxy-client-cert-file/--proxy-client-key-file"
            );
        };
        Ok(Self {
            ca_pem,
            allowed_names: list("requestheader-allowed-names"),
            username_headers: list("requestheader-username-headers"),
            group_headers: list("requestheader-group-headers"),
            extra_prefixes: list("requestheader-extra-headers-prefix"),
        })
    }

    /// The CAs whose client certificates the TLS handshake accepts.
    pub fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.context("parse the front-proxy CA")?)
                .context("add the front-proxy CA")?;
        }
        anyhow::ensure!(!roots.is_empty(), "the front-proxy CA bundle is empty");
        Ok(roots)
    }

    /// The caller a request names, if it came through the API server's proxy.
    pub fn caller(&self, peer: &Peer, headers: &HeaderMap) -> Result<Caller, String> {
        let Some(name) = &peer.common_name else {
            return Err("no client certificate of the API server's front proxy".into());
        };
        if !self.allowed_names.is_empty() && !self.allowed_names.contains(name) {
            return Err(format!(
                "client certificate {name:?} is not an allowed front proxy"
            ));
        }
        let values = |header: &str| {
            headers
                .get_all(header)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect::<Vec<_>>()
        };
        let user = self
            .username_headers
            .iter()
            .find_map(|h| values(h).into_iter().next())
            .filter(|u| !u.is_empty())
            .ok_or("the front proxy named no user")?;
        let groups = self.group_headers.iter().flat_map(|h| values(h)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let lower = name.as_str().to_ascii_lowercase();
            let Some(key) = self
                .extra_prefixes
                .iter()
                .find_map(|p| lower.strip_prefix(&p.to_ascii_lowercase()))
            else {
                continue;
            };
            if let Ok(v) = value.to_str() {
                extra.entry(unescape(key)).or_default().push(v.to_string());
            }
        }
        Ok(Caller {
            user,
            groups,
            extra,
        })
    }
}

/// Extra keys arrive percent-encoded (the API server escapes what a header name cannot hold).
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = key
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> FrontProxy {
        FrontProxy {
            allowed_names: vec!["front-proxy-client".into()],
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn headers_count_only_from_the_allowed_proxy() {
        let h = headers(&[
            ("x-remote-user", "alice"),
            ("x-remote-group", "dev"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-extra-scopes%2fa", "x"),
        ]);
        let proxied = Peer {
            common_name: Some("front-proxy-client".into()),
        };
        let caller = proxy().caller(&proxied, &h).unwrap();
        assert_eq!(caller.user, "alice");
        assert_eq!(caller.groups, vec!["dev", "system:authenticated"]);
        assert_eq!(caller.extra["scopes/a"], vec!["x"]);

        // The same headers on a connection without the proxy's certificate, or with another
        // name the CA signed, name nobody.
        assert!(proxy().caller(&Peer::default(), &h).is_err());
        let other = Peer {
            common_name: Some("someone-else".into()),
        };
        assert!(proxy().caller(&other, &h).is_err());
        assert!(proxy().caller(&proxied, &headers(&[])).is_err());
    }
}
