//! Kubernetes Events for what a user must see. Publishing is best effort: a failed Event is
//! logged, never a reason to fail a reconcile.

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::Context;

/// Publishes an Event about `object`.
pub async fn publish<K>(
    ctx: &Context,
    object: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish event");
    }
}
