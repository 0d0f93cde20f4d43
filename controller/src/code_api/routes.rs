//! The code API's handlers: discovery, upload, listing and download of archives. Every answer that is not
//! a success is a Kubernetes `Status`, so kubectl and cpsctl show its message as they show the
//! API server's own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use conpaas_artifacts::Error as StoreError;
use conpaas_crds::code_api::{
    Archive, GROUP, LOGS_RESOURCE, RESOURCE, Received, Uploaded, VERSION,
};
use conpaas_crds::v1alpha1::Service;
use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Resource};
use serde_json::json;

use super::CodeApi;
use super::front_proxy::{Caller, Peer};
use super::pieces::{self, Outcome, Refused};
use super::quota;

pub fn router(api: Arc<CodeApi>) -> Router {
    let base = format!("/apis/{GROUP}/{VERSION}");
    Router::new()
        .route(&base, get(discovery))
        .route(
            &format!("{base}/namespaces/{{namespace}}/services/{{service}}/archives"),
            post(upload).get(list),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/services/{{service}}/archives/{{sha256}}"),
            get(download),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/services/{{service}}/logs"),
            get(super::logs::read),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { status(StatusCode::NOT_FOUND, "NotFound", "no such path".into()) })
        .with_state(api)
}

/// A request refused, answered as a Kubernetes `Status`.
pub(super) struct Refusal {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

pub(super) fn status(code: StatusCode, reason: &'static str, message: String) -> Refusal {
    Refusal {
        code,
        reason,
        message,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        (self.code, axum::Json(body)).into_response()
    }
}

/// What the API server's discovery and availability checks read.
async fn discovery() -> Response {
    let (name, _) = RESOURCE.split_once('/').expect("a subresource");
    axum::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{"name": RESOURCE, "singularName": "", "namespaced": true,
                       "kind": "Archive", "verbs": ["create", "get"]},
                      {"name": LOGS_RESOURCE, "singularName": "", "namespaced": true,
                       "kind": "Log", "verbs": ["get"]},
                      {"name": name, "singularName": "service", "namespaced": true,
                       "kind": "Service", "verbs": []}],
    }))
    .into_response()
}

/// The caller, once the controller can answer at all.
pub(super) fn admit(api: &CodeApi, peer: &Peer, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let caller = api
        .proxy
        .caller(peer, headers)
        .map_err(|why| status(StatusCode::UNAUTHORIZED, "Unauthorized", why))?;
    if !api.ready.load(Ordering::Relaxed) {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the controller is starting; try again".into(),
        ));
    }
    Ok(caller)
}

/// The Service, from the cache; from the API server when the cache has not seen it yet (a
/// Service applied a moment before the upload).
async fn find_service(api: &CodeApi, namespace: &str, name: &str) -> Result<Service, Refusal> {
    if let Some(found) = api.ctx.caches.service(namespace, name) {
        return Ok(found);
    }
    let fetched = Api::<Service>::namespaced(api.ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("read services.conpaas.io {name:?}: {e}"),
            )
        })?;
    fetched.ok_or_else(|| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("services.conpaas.io {name:?} not found in namespace {namespace}"),
        )
    })
}

/// Asks the API server whether `caller` may `verb` the Service (RBAC decides, as for kubectl).
pub(super) async fn may(
    api: &CodeApi,
    caller: &Caller,
    verb: &str,
    namespace: &str,
    service: &str,
) -> Result<(), Refusal> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            extra: Some(caller.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                verb: Some(verb.into()),
                group: Some(Service::group(&()).into()),
                resource: Some(Service::plural(&()).into()),
                name: Some(service.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(api.ctx.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("could not check the caller's rights: {e}"),
            )
        })?;
    if answer.status.is_some_and(|s| s.allowed) {
        return Ok(());
    }
    Err(status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "user {:?} may not {verb} services.conpaas.io {service:?} in namespace {namespace}",
            caller.user
        ),
    ))
}

#[derive(serde::Deserialize)]
struct UploadQuery {
    /// The digest the uploader computed; a body with another one is refused.
    sha256: Option<String>,
    /// Where this piece goes in an upload made of pieces (absent: the body is the archive).
    offset: Option<u64>,
    /// Whether this piece is the upload's last.
    #[serde(default)]
    last: bool,
}

async fn upload(
    State(api): State<Arc<CodeApi>>,
    Extension(peer): Extension<Peer>,
    Path((namespace, service)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let caller = admit(&api, &peer, &headers)?;
    // Rights first: whether a Service exists is told only to those who may see it. A node of
    // the Service uploads the data it saves when the Service stops (what the store keeps is
    // only what the Service then names).
    if !is_node_of(&api, &caller, &namespace, &service) {
        may(&api, &caller, "update", &namespace, &service).await?;
    }
    let found = find_service(&api, &namespace, &service).await?;
    let body = body.into_data_stream();
    let key = query.sha256.clone().map(|sha256| pieces::Key {
        user: caller.user.clone(),
        namespace: namespace.clone(),
        service: service.clone(),
        sha256,
    });
    let room = room(
        &api,
        &namespace,
        key.as_ref().filter(|_| query.offset.is_some()),
    )
    .await?;
    let refused = |e: StoreError| match e {
        StoreError::TooLarge { .. } if room.quota_bound => room.refusal(&namespace),
        e => store_refusal(e),
    };
    let stored = match (query.offset, key) {
        (None, _) => api
            .store
            .put(body, room.limit, query.sha256.as_deref())
            .await
            .map_err(refused)?,
        (Some(_), None) => {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "a piece of an upload needs the whole archive's sha256".into(),
            ));
        }
        (Some(offset), Some(key)) => {
            let outcome = api
                .pieces
                .piece(&api.store, room.limit, key, offset, query.last, body)
                .await;
            match outcome {
                Ok(Outcome::Received(received)) => {
                    let answer = Received { received };
                    return Ok((StatusCode::ACCEPTED, axum::Json(answer)).into_response());
                }
                Ok(Outcome::Stored(stored)) => stored,
                Err(e @ Refused::Conflict { .. }) => {
                    return Err(status(StatusCode::CONFLICT, "Conflict", e.to_string()));
                }
                Err(e @ Refused::TooMany) => {
                    return Err(status(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        e.to_string(),
                    ));
                }
                Err(Refused::Store(e)) => return Err(refused(e)),
            }
        }
    };
    // Uploads side by side each measured the room before the others were stored: the archive
    // counts only if it still fits once they are, checked and noted in the namespace's turn
    // (one that does not fit is named by nothing, and the collector sweeps it). The grant is in
    // the turn too, so that an archive is noted only once this namespace may read it.
    let turn = match api.namespace_store_bytes {
        0 => None,
        _ => Some(api.turns.take(&namespace).await),
    };
    if turn.is_some() {
        let open = api.pieces.open_bytes(&namespace, None);
        let (held, counted) = quota::held(&api, &namespace).await.map_err(store_refusal)?;
        let own = if counted.contains(&stored.sha256) {
            0
        } else {
            stored.size
        };
        if held.saturating_add(open).saturating_add(own) > api.namespace_store_bytes {
            // Its bytes are on the store's disk until the collector sweeps them: they count
            // against the namespace until then, or racing uploads could hold many times the
            // quota for a grace period.
            api.recent
                .note(&namespace, &stored.sha256, stored.size, api.gc_grace);
            let room = Room {
                limit: 0,
                quota_bound: true,
                used: held.saturating_add(open),
                quota: api.namespace_store_bytes,
            };
            return Err(room.refusal(&namespace));
        }
    }
    // Only this namespace may read it back: another that learns the digest and names it gets
    // nothing.
    api.store
        .grant(&stored.sha256, &namespace)
        .await
        .map_err(store_refusal)?;
    api.recent
        .note(&namespace, &stored.sha256, stored.size, api.gc_grace);
    drop(turn);
    let note = format!(
        "archive sha256:{} ({} bytes) uploaded by {}",
        stored.sha256, stored.size, caller.user
    );
    conpaas_reconcilers::events::publish(
        &api.ctx,
        &found,
        false,
        "ArchiveUploaded",
        "Upload",
        note,
    )
    .await;
    let answer = Uploaded {
        sha256: stored.sha256,
        size: stored.size,
    };
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// How large an upload may grow: the store's archive limit, or what is left of the namespace's
/// quota when that is less.
struct Room {
    limit: u64,
    quota_bound: bool,
    used: u64,
    quota: u64,
}

impl Room {
    fn refusal(&self, namespace: &str) -> Refusal {
        status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "upload refused, nothing stored: namespace {namespace} holds {} of its {} bytes in the artifact store (CONPAAS_NAMESPACE_STORE_BYTES), and this archive does not fit; delete code versions its Services no longer need, or ask for a larger quota",
                self.used, self.quota
            ),
        )
    }
}

/// The room an upload into `namespace` has (`open`: its own upload in pieces, not counted).
async fn room(api: &CodeApi, namespace: &str, open: Option<&pieces::Key>) -> Result<Room, Refusal> {
    let quota = api.namespace_store_bytes;
    if quota == 0 {
        return Ok(Room {
            limit: api.max_archive_bytes,
            quota_bound: false,
            used: 0,
            quota,
        });
    }
    let used = quota::used(api, namespace)
        .await
        .map_err(store_refusal)?
        .saturating_add(api.pieces.open_bytes(namespace, open));
    let left = quota.saturating_sub(used);
    Ok(Room {
        limit: left.min(api.max_archive_bytes),
        quota_bound: left < api.max_archive_bytes,
        used,
        quota,
    })
}

/// A store's refusal of an upload, as the uploader should see it.
fn store_refusal(e: StoreError) -> Refusal {
    match e {
        StoreError::TooLarge { .. } => status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            e.to_string(),
        ),
        StoreError::DigestMismatch { .. } | StoreError::Body(_) | StoreError::BadDigest(_) => {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("upload refused, nothing stored: {e}"),
            )
        }
        e => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        ),
    }
}

/// The ServiceNode a node's token names, when it is one of `service`'s.
fn is_node_of(api: &CodeApi, caller: &Caller, namespace: &str, service: &str) -> bool {
    let prefix = format!("system:serviceaccount:{namespace}:");
    caller
        .user
        .strip_prefix(&prefix)
        .and_then(|node| api.ctx.caches.node(namespace, node))
        .is_some_and(|node| node.spec.service == service)
}

/// The archives the Service's versions name, with their sizes and when they were stored (one
/// the store lacks is left out), for whoever may `get` the Service.
async fn list(
    State(api): State<Arc<CodeApi>>,
    Extension(peer): Extension<Peer>,
    Path((namespace, service)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let caller = admit(&api, &peer, &headers)?;
    may(&api, &caller, "get", &namespace, &service).await?;
    let found = find_service(&api, &namespace, &service).await?;
    let digests: std::collections::BTreeSet<&str> = found.named_archives().collect();
    let failed = |e: StoreError| {
        status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )
    };
    let mut archives = Vec::new();
    for sha256 in digests {
        if !api
            .store
            .held_by(sha256, &namespace)
            .await
            .map_err(failed)?
        {
            continue;
        }
        if let Some(found) = api.store.describe(sha256).await.map_err(failed)? {
            archives.push(Archive {
                sha256: found.sha256,
                size: found.size,
                written: found.written,
            });
        }
    }
    Ok(axum::Json(archives).into_response())
}

async fn download(
    State(api): State<Arc<CodeApi>>,
    Extension(peer): Extension<Peer>,
    Path((namespace, service, sha256)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let caller = admit(&api, &peer, &headers)?;
    let node = is_node_of(&api, &caller, &namespace, &service);
    if !node {
        may(&api, &caller, "get", &namespace, &service).await?;
    }
    let found = find_service(&api, &namespace, &service).await?;
    // The data a Service saved at a stop is its database: only those who may change the
    // Service (and its nodes) read it, not everyone who may view it.
    let versions = found.spec.code.iter().flat_map(|c| &c.versions);
    let code = versions
        .filter_map(|v| v.artifact.as_ref())
        .any(|a| a.sha256 == sha256);
    if !code && !node {
        may(&api, &caller, "update", &namespace, &service).await?;
    }
    // The store is shared by every tenant: an archive is served only under a Service that
    // names it (a version, or the data it saved), and only when it was stored for the
    // Service's namespace (a digest learnt and written into a version reads nothing).
    let held = found.named_archives().any(|named| named == sha256)
        && api.store.held_by(&sha256, &namespace).await.map_err(|e| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.to_string(),
            )
        })?;
    if !held {
        return Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "no code version or saved data of service {service:?} has archive sha256:{sha256}"
            ),
        ));
    }
    let fetch_failed = |e: StoreError| match e {
        StoreError::NotFound(_) => status(StatusCode::NOT_FOUND, "NotFound", e.to_string()),
        e => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        ),
    };
    // A piece, when asked for one of an archive that has bytes (an empty or missing one is
    // answered whole below).
    if let Some((from, to)) = range(&headers)
        && let Some(whole) = api
            .store
            .size(&sha256)
            .await
            .map_err(fetch_failed)?
            .filter(|&whole| whole > 0)
    {
        let to = to.map_or(whole, |to| to.saturating_add(1).min(whole));
        if from >= to {
            return Err(status(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RequestedRangeNotSatisfiable",
                format!("archive sha256:{sha256} has {whole} bytes, none from byte {from}"),
            ));
        }
        let (_, bytes) = api
            .store
            .get_piece(&sha256, from, to)
            .await
            .map_err(fetch_failed)?;
        return Ok((
            StatusCode::PARTIAL_CONTENT,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, (to - from).to_string()),
                (
                    header::CONTENT_RANGE,
                    format!("bytes {from}-{}/{whole}", to - 1),
                ),
            ],
            Body::from_stream(bytes),
        )
            .into_response());
    }
    let (size, bytes) = api.store.get(&sha256).await.map_err(fetch_failed)?;
    // A digest mismatch ends the stream with an error: the connection breaks and the client's
    // own check fails, instead of a corrupted archive arriving whole.
    let body = Body::from_stream(
        bytes.map(|chunk| chunk.inspect_err(|e| tracing::error!(error = %e, "serving an archive"))),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body,
    )
        .into_response())
}

/// The one range `bytes=FROM-[TO]` a request asks for (TO inclusive); other forms (several
/// ranges, suffixes) are answered with the whole archive, as HTTP allows.
fn range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let (from, to) = value.strip_prefix("bytes=")?.split_once('-')?;
    let from = from.trim().parse().ok()?;
    let to = match to.trim() {
        "" => None,
        to => Some(to.parse().ok()?),
    };
    Some((from, to))
}
