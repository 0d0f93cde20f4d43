//! `GET .../namespaces/{ns}/services/{service}/logs?node=N[&file=F][&tail=T]`: a node's log,
//! read from its agent by the controller for a caller the API server authorized (`get` on
//! `services/logs` of the code API's group) and who may see the Service. As the API server
//! reads kubelet logs for `kubectl logs`: the user's credential stays here. The agent is reached
//! over TLS at the address the cloud reports for the node's VM (one whose tags name the node),
//! its certificate must be the one the node reported, and the controller shows the node's log key
//! (which opens that node's log only).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use conpaas_crds::code_api::{AGENT_LOG_PORT, is_plain_log_name, node_log_key};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use conpaas_crds::v1alpha1::ServiceNode;
use conpaas_reconcilers::service_node::observe::owns;
use conpaas_reconcilers::service_node::plan::vm_id;

use super::CodeApi;
use super::front_proxy::Peer;
use super::routes::{Refusal, admit, may, status};

/// How long the agent has to connect, and then to answer.
const CONNECT: Duration = Duration::from_secs(5);
const ANSWER: Duration = Duration::from_secs(15);
/// The most of an agent's answer read (headers and log).
const MAX_BYTES: u64 = 4 << 20;
/// The most lines asked for.
const MAX_TAIL: usize = 10_000;
/// Log reads in flight at once, whoever asks: each holds up to [`MAX_BYTES`] for up to
/// [`ANSWER`], and a tenant's own agent (or what it put in its place) may answer slowly.
const MAX_READS: usize = 8;

/// Log reads in flight for one namespace: a tenant whose agents answer slowly holds at most
/// these of the [`MAX_READS`], and the others stay for everyone else.
const MAX_READS_PER_NAMESPACE: usize = 2;

static READS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(MAX_READS));

/// Reads in flight per namespace.
static NAMESPACE_READS: std::sync::LazyLock<Mutex<HashMap<String, usize>>> =
    std::sync::LazyLock::new(Default::default);

/// One namespace's read in flight, counted until dropped.
struct NamespaceRead(String);

impl NamespaceRead {
    fn begin(namespace: &str) -> Option<Self> {
        let mut reads = NAMESPACE_READS.lock().unwrap_or_else(|p| p.into_inner());
        let count = reads.entry(namespace.to_string()).or_default();
        if *count >= MAX_READS_PER_NAMESPACE {
            return None;
        }
        *count += 1;
        Some(Self(namespace.to_string()))
    }
}

impl Drop for NamespaceRead {
    fn drop(&mut self) {
        let mut reads = NAMESPACE_READS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = reads.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                reads.remove(&self.0);
            }
        }
    }
}

#[derive(serde::Deserialize)]
pub struct LogsQuery {
    node: String,
    file: Option<String>,
    tail: Option<usize>,
}

pub async fn read(
    State(api): State<Arc<CodeApi>>,
    Extension(peer): Extension<Peer>,
    Path((namespace, service)): Path<(String, String)>,
    Query(query): Query<LogsQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let caller = admit(&api, &peer, &headers)?;
    may(&api, &caller, "get", &namespace, &service).await?;
    let _own = NamespaceRead::begin(&namespace).ok_or_else(|| {
        status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!(
                "{MAX_READS_PER_NAMESPACE} log reads of namespace {namespace} are in flight; try again in a moment"
            ),
        )
    })?;
    let _slot = READS.try_acquire().map_err(|_| {
        status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("{MAX_READS} log reads are in flight; try again in a moment"),
        )
    })?;
    let node = api
        .ctx
        .caches
        .node(&namespace, &query.node)
        .filter(|n| n.spec.service == service)
        .ok_or_else(|| {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!(
                    "service {namespace}/{service} has no node {:?}; `cpsctl describe {service}` lists them",
                    query.node
                ),
            )
        })?;
    let node_status = node.status.clone().unwrap_or_default();
    // 502, not 503: clients retry a 503 for minutes, and the reader wants the reason now.
    let unavailable = |why: String| status(StatusCode::BAD_GATEWAY, "BadGateway", why);
    let address = vm_address(&api, &node)
        .await
        .map_err(|why| unavailable(format!("node {}: {why}", query.node)))?;
    let pin = node_status
        .agent
        .and_then(|a| a.log_certificate_sha256)
        .ok_or_else(|| {
            unavailable(format!(
                "node {}: its agent reports no log certificate (it has not reported yet, or it \
                 predates logs over TLS: replace the node to read them)",
                query.node
            ))
        })?;
    if let Some(file) = query.file.as_deref().filter(|f| !is_plain_log_name(f)) {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("file {file:?} is not a log name like run.sh.log"),
        ));
    }
    let file = query.file.map(|f| format!("/{f}")).unwrap_or_default();
    let tail = query.tail.unwrap_or(100).min(MAX_TAIL);
    let path = format!("/log{file}?tail={tail}");
    let (code, body) = fetch(&address, &pin, &node_log_key(&node.spec.token), &path)
        .await
        .map_err(|why| unavailable(format!("node {} at {address}: {why}", query.node)))?;
    // Only what the agent can mean is passed on: the VM is the tenant's, and so is what
    // answers there (a 401 would tell the reader that their own credential failed).
    match code {
        200 => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()),
        400 => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            body.trim().into(),
        )),
        404 => Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            body.trim().into(),
        )),
        other => Err(unavailable(format!(
            "node {} at {address}: its agent answered {other}: {}",
            query.node,
            body.trim()
        ))),
    }
}

/// The node's VM address as its cloud reports it, for a VM whose provider-side tags name the
/// node: a status written by someone other than the controller (were the admission policy
/// off) sends the controller nowhere.
async fn vm_address(api: &CodeApi, node: &ServiceNode) -> Result<String, String> {
    let provider_id = node
        .status
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .ok_or("no VM yet (it is being made)")?;
    let cloud = api
        .ctx
        .caches
        .cloud(&node.spec.cloud)
        .ok_or_else(|| format!("its Cloud {:?} does not exist", node.spec.cloud))?;
    let driver = api.ctx.drivers.driver(&cloud).await?;
    let vm = api
        .ctx
        .vms
        .get(&node.spec.cloud, driver.as_ref(), vm_id(&provider_id))
        .await
        .map_err(|e| format!("describe its VM: {e}"))?
        .ok_or("its VM is gone")?;
    if !owns(node, &vm) {
        return Err(format!(
            "its status names VM {}, which is not its own: nothing is read from it",
            vm.id
        ));
    }
    vm.address.ok_or_else(|| "its VM has no address yet".into())
}

/// `GET path` on the agent at `address`, over TLS with the certificate whose SHA-256 is `pin`,
/// showing `key`: the answer's status code and body.
async fn fetch(address: &str, pin: &str, key: &str, path: &str) -> Result<(u16, String), String> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        pin: pin.to_string(),
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let name = ServerName::try_from(address.to_string())
        .map_err(|e| format!("{address:?} is not an address: {e}"))?;
    let tcp = tokio::time::timeout(
        CONNECT,
        tokio::net::TcpStream::connect((address, AGENT_LOG_PORT)),
    )
    .await
    .map_err(|_| {
        format!(
            "no connection to port {AGENT_LOG_PORT} in {} s",
            CONNECT.as_secs()
        )
    })?
    .map_err(|e| format!("connect to port {AGENT_LOG_PORT}: {e} (is its agent running?)"))?;
    let exchange = async {
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with the agent: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send the request: {e}"))?;
        let mut answer = Vec::new();
        let read = (&mut tls).take(MAX_BYTES).read_to_end(&mut answer).await;
        // An agent that closes without TLS's goodbye still gave its whole answer.
        if let Err(e) = read
            && answer.is_empty()
        {
            return Err(format!("read the answer: {e}"));
        }
        Ok(answer)
    };
    let answer = tokio::time::timeout(ANSWER, exchange)
        .await
        .map_err(|_| format!("no answer in {} s", ANSWER.as_secs()))??;
    parse(&String::from_utf8_lossy(&answer))
}

/// An HTTP/1.1 answer's status code and body.
fn parse(answer: &str) -> Result<(u16, String), String> {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or("the agent's answer has no end of headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("the agent's answer has no status code")?;
    Ok((code, body.to_string()))
}

/// Accepts exactly the certificate the node reported (its SHA-256), whatever its names or
/// issuer: the agent made it for itself when it started.
#[derive(Debug)]
struct Pinned {
    pin: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        if hex::encode(Sha256::digest(end_entity.as_ref())) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(tokio_rustls::rustls::Error::General(
                "the agent's certificate is not the one its node reported".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_answer_parses_into_code_and_body() {
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab\n"),
            Ok((200, "ab\n".into()))
        );
        assert_eq!(
            parse("HTTP/1.1 401 Unauthorized\r\n\r\nno\n").map(|a| a.0),
            Ok(401)
        );
        assert!(parse("garbage").is_err());
    }

    /// An agent stand-in on loopback: TLS with a certificate of its own, answering `body` to
    /// requests that show `key`, 401 to others. Its address and certificate digest.
    async fn agent(key: &'static str, body: &'static str) -> (String, String) {
        use tokio_rustls::rustls::ServerConfig;
        use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let made = rcgen::generate_simple_self_signed(vec!["127.0.5.55".into()]).unwrap();
        let der = made.cert.der().to_vec();
        let pin = hex::encode(Sha256::digest(&der));
        let key_der =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(der)], key_der)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(("127.0.5.55", AGENT_LOG_PORT))
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    continue;
                };
                let mut request = vec![0u8; 4096];
                let n = tls.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]).to_string();
                let answer = if request.contains(&format!("Bearer {key}\r\n")) {
                    format!("HTTP/1.1 200 OK\r\n\r\n{body}")
                } else {
                    "HTTP/1.1 401 Unauthorized\r\n\r\nno\n".to_string()
                };
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        ("127.0.5.55".into(), pin)
    }

    #[test]
    fn one_namespace_holds_at_most_its_share_of_the_reads() {
        let first = NamespaceRead::begin("slow-tenant").unwrap();
        let _second = NamespaceRead::begin("slow-tenant").unwrap();
        assert!(NamespaceRead::begin("slow-tenant").is_none());
        assert!(NamespaceRead::begin("another-tenant").is_some());
        drop(first);
        assert!(
            NamespaceRead::begin("slow-tenant").is_some(),
            "freed when done"
        );
    }

    #[tokio::test]
    async fn the_log_is_read_only_from_the_agent_whose_certificate_the_node_reported() {
        let (address, pin) = agent("node-key", "agent starting\n").await;
        assert_eq!(
            fetch(&address, &pin, "node-key", "/log").await,
            Ok((200, "agent starting\n".into()))
        );
        assert_eq!(
            fetch(&address, &pin, "another-key", "/log")
                .await
                .map(|a| a.0),
            Ok(401)
        );
        // Another certificate at the node's address: nothing is sent to it.
        let refused = fetch(&address, &"0".repeat(64), "node-key", "/log")
            .await
            .unwrap_err();
        assert!(
            refused.contains("not the one its node reported"),
            "{refused}"
        );
    }
}
