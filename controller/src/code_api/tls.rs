//! The code API's serving certificate: self-signed for the Service the APIService names, kept in
//! a Secret beside the controller so every replica and every restart serves the same one (the
//! APIService's `caBundle` is this certificate).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// A certificate and its key, PEM.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The serving identity stored in Secret `namespace/name`, made (for `dns_names`) when missing.
pub async fn serving_identity(
    client: &Client,
    namespace: &str,
    name: &str,
    dns_names: Vec<String>,
) -> anyhow::Result<Identity> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(found) = secrets
        .get_opt(name)
        .await
        .with_context(|| format!("read Secret {namespace}/{name}"))?
        .and_then(|s| from_secret(&s))
    {
        return Ok(found);
    }
    let made = rcgen::generate_simple_self_signed(dns_names)
        .context("make the code API's serving certificate")?;
    let identity = Identity {
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".into(),
                ByteString(identity.cert_pem.clone().into()),
            ),
            (
                "tls.key".into(),
                ByteString(identity.key_pem.clone().into()),
            ),
        ])),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(identity),
        // Another replica made it first: serve that one.
        Err(kube::Error::Api(e)) if e.code == 409 => secrets
            .get(name)
            .await
            .ok()
            .as_ref()
            .and_then(from_secret)
            .with_context(|| format!("Secret {namespace}/{name} holds no tls.crt and tls.key")),
        Err(e) => Err(e).with_context(|| format!("create Secret {namespace}/{name}")),
    }
}

fn from_secret(secret: &Secret) -> Option<Identity> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    Some(Identity {
        cert_pem: text("tls.crt")?,
        key_pem: text("tls.key")?,
    })
}

/// TLS that serves `identity` and asks for (but does not require) a client certificate signed by
/// one of `client_cas`: requests without one are answered 401 by the handlers.
pub fn server_config(
    identity: &Identity,
    client_cas: RootCertStore,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_cas), provider.clone())
            .allow_unauthenticated()
            .build()
            .context("build the front-proxy certificate check")?;
    let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse the serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .context("parse the serving key")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the serving certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
