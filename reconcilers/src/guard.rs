//! What every loop does around its reconcile, written once: one object the controller cannot
//! read (written against a newer schema, say) must not stop the loop for every other object, so
//! watches deserialize into [`DeserializeGuard`] and an unreadable object gets a warning, an
//! Event and a metric instead of a reconcile; every reconcile is counted; a failure is logged
//! once with its causes and backs off per object, and a permanent one waits for a change.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::Action as Requeue;

use crate::{Context, Error};

/// Reconciles the object with `reconcile` when it could be read; reports it otherwise.
pub async fn reconcile<K, F, Fut>(
    guard: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Requeue, Error>
where
    K: Resource<DynamicType = ()> + Clone,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Requeue, Error>>,
{
    match &guard.0 {
        // A cache still filling (right after a start) would show a Service without its nodes.
        Ok(_) if !ctx.caches.ready() => Ok(Requeue::requeue(Duration::from_secs(1))),
        Ok(object) => {
            let _metrics = ctx.metrics.reconcile(&K::kind(&()));
            let key = backoff_key(object);
            let requeue = reconcile(Arc::new(object.clone()), ctx.clone()).await?;
            ctx.backoff.succeeded(&key);
            Ok(requeue)
        }
        Err(invalid) => {
            report::<K>(&ctx, invalid).await;
            Ok(Requeue::await_change())
        }
    }
}

/// The object's key in the per-object backoff: `<kind>/<namespace>/<name>`.
fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}",
        K::kind(&()).to_lowercase(),
        crate::finalizers::full_name(object)
    )
}

/// After a failed reconcile: a permanent failure (the cloud refused for a reason that repeats)
/// waits for the object to change; anything else is retried with per-object backoff. Unreadable
/// objects are not retried until they change.
pub fn error_policy<K>(guard: Arc<DeserializeGuard<K>>, error: &Error, ctx: Arc<Context>) -> Requeue
where
    K: Resource<DynamicType = ()> + Clone,
{
    let Ok(object) = &guard.0 else {
        return Requeue::requeue(Duration::from_secs(300));
    };
    let kind = K::kind(&());
    ctx.metrics.failed(&kind, error.category());
    let key = backoff_key(object);
    if error.is_permanent() {
        tracing::warn!(error = %error.chain(), category = error.category(), object = %key, "reconcile failed; waiting for a change of the object or its Cloud");
        return Requeue::await_change();
    }
    let wait = ctx.backoff.failed(&key);
    tracing::warn!(error = %error.chain(), category = error.category(), retry_in = ?wait, object = %key, "reconcile failed");
    Requeue::requeue(wait)
}

async fn report<K: Resource<DynamicType = ()>>(ctx: &Context, invalid: &InvalidObject) {
    let kind = K::kind(&());
    let meta = &invalid.metadata;
    let name = meta.name.clone().unwrap_or_default();
    tracing::warn!(kind = %kind, namespace = meta.namespace.as_deref().unwrap_or(""), name = %name, error = %invalid.error, "cannot read object");
    ctx.metrics.failed(&kind, "InvalidObject");
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(kind.into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    };
    let note = format!("the controller cannot read this object: {}", invalid.error);
    ctx.recorder
        .publish(&reference, true, "InvalidObject", "Reconcile", note)
        .await;
}
