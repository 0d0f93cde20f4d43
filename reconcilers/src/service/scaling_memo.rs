//! The autoscaler's decisions as this controller last wrote them. The Service cache can lag a
//! status write by a moment; a pass that read the older count from it would undo a scale-out
//! (deleting the node just created, then making another) or a scale-in. Each role's decision
//! with the later `lastChange` wins, so after a restart (an empty memo) the cache alone counts.

use std::collections::HashMap;
use std::sync::Mutex;

use conpaas_crds::v1alpha1::{RoleScaling, Service};
use kube::ResourceExt;

/// Decisions written, by Service UID.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, Vec<RoleScaling>>>);

impl Written {
    /// Notes the decisions just written for `service`.
    pub fn remember(&self, service: &Service, roles: &[RoleScaling]) {
        let Some(uid) = service.uid() else { return };
        let mut written = self.0.lock().expect("the scaling memo is never poisoned");
        if roles.is_empty() {
            written.remove(&uid);
        } else {
            written.insert(uid, roles.to_vec());
        }
    }

    /// The newer of the cached and the written decisions, role by role.
    pub fn latest(&self, service: &Service) -> Vec<RoleScaling> {
        let cached = service
            .status
            .as_ref()
            .map(|s| s.autoscaling.clone())
            .unwrap_or_default();
        let Some(uid) = service.uid() else {
            return cached;
        };
        let written = self.0.lock().expect("the scaling memo is never poisoned");
        let Some(mine) = written.get(&uid) else {
            return cached;
        };
        let changed = |r: &RoleScaling| r.last_change.as_ref().map(|t| t.0);
        let mut latest = cached;
        for role in mine {
            match latest.iter_mut().find(|r| r.role == role.role) {
                Some(c) if changed(c) >= changed(role) => {}
                Some(c) => *c = role.clone(),
                None => latest.push(role.clone()),
            }
        }
        latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_crds::v1alpha1::{ServiceSpec, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn scaling(count: i32, at: i64) -> RoleScaling {
        RoleScaling {
            role: "backend".into(),
            count,
            last_change: Some(Time(Timestamp::from_second(at).unwrap())),
            ..Default::default()
        }
    }

    fn service(cached: Vec<RoleScaling>) -> Service {
        let spec: ServiceSpec =
            serde_json::from_value(serde_json::json!({"application": "demo", "type": "php"}))
                .unwrap();
        let mut s = Service::new("site", spec);
        s.metadata.uid = Some("u1".into());
        s.status = Some(ServiceStatus {
            autoscaling: cached,
            ..Default::default()
        });
        s
    }

    #[test]
    fn a_stale_cache_never_undoes_a_decision_written_since() {
        let memo = Written::default();
        memo.remember(&service(vec![]), &[scaling(3, 20)]);
        assert_eq!(memo.latest(&service(vec![scaling(2, 10)]))[0].count, 3);
        // The cache caught up, or moved on (another replica decided later).
        assert_eq!(memo.latest(&service(vec![scaling(3, 20)]))[0].count, 3);
        assert_eq!(memo.latest(&service(vec![scaling(4, 30)]))[0].count, 4);
        // Nothing written: the cache.
        assert_eq!(
            Written::default().latest(&service(vec![scaling(2, 10)]))[0].count,
            2
        );
    }
}
