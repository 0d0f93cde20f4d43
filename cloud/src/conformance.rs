//! The behaviour every [`ComputeDriver`] must show, as one suite run against each backend.
//! A backend's test calls [`run`] with a fresh, empty cloud.

use std::collections::BTreeSet;

use crate::{ComputeDriver, CreateRequest, Tags, VmState};

/// A create request with the ownership tags the operator sets, for a given token.
pub fn request(token: &str) -> CreateRequest {
    let mut tags = Tags::new();
    tags.insert("conpaas.io/managed-by".into(), "conformance".into());
    tags.insert("conpaas.io/node".into(), format!("node-{token}"));
    CreateRequest {
        token: token.into(),
        name: format!("node-{token}"),
        instance_type: None,
        tags,
        user_data: format!("{{\"token\":\"{token}\"}}"),
        volume_gib: None,
        size: None,
    }
}

fn managed_by_suite() -> Tags {
    let mut tags = Tags::new();
    tags.insert("conpaas.io/managed-by".into(), "conformance".into());
    tags
}

/// Runs every check against `cloud`, which must start empty. Panics on the first violation
/// with a message naming the rule.
pub async fn run(cloud: &dyn ComputeDriver) {
    create_is_idempotent_on_the_token(cloud).await;
    vms_carry_their_tags_and_list_filters_by_tag(cloud).await;
    delete_is_idempotent_and_final(cloud).await;
    tags_can_be_added(cloud).await;
    invalid_tokens_are_refused(cloud).await;
}

async fn create_is_idempotent_on_the_token(cloud: &dyn ComputeDriver) {
    let first = cloud.create(&request("idem-1")).await.expect("create");
    let again = cloud
        .create(&request("idem-1"))
        .await
        .expect("create with the same token");
    assert_eq!(
        first.id, again.id,
        "a second create with the same token must return the same VM"
    );
    assert_eq!(first.token, "idem-1");
    assert!(
        first
            .provider_id
            .starts_with(&format!("{}://", cloud.provider())),
        "provider ID {} names the provider",
        first.provider_id
    );
    let other = cloud.create(&request("idem-2")).await.expect("create");
    assert_ne!(
        first.id, other.id,
        "different tokens must give different VMs"
    );
    let got = cloud
        .get(&first.id)
        .await
        .expect("get")
        .expect("the VM exists");
    assert!(
        matches!(got.state, VmState::Pending | VmState::Running),
        "a new VM is pending or running, not {:?}",
        got.state
    );
    let listed = cloud.list(&managed_by_suite()).await.expect("list");
    assert_eq!(
        listed.iter().filter(|vm| vm.token == "idem-1").count(),
        1,
        "one VM per token"
    );
    for id in [first.id, other.id] {
        cloud.delete(&id).await.expect("delete");
    }
}

async fn vms_carry_their_tags_and_list_filters_by_tag(cloud: &dyn ComputeDriver) {
    let a = cloud.create(&request("tags-a")).await.expect("create");
    let b = cloud.create(&request("tags-b")).await.expect("create");
    assert_eq!(
        a.tags.get("conpaas.io/node").map(String::as_str),
        Some("node-tags-a")
    );

    let all: BTreeSet<String> = cloud
        .list(&managed_by_suite())
        .await
        .expect("list")
        .into_iter()
        .map(|vm| vm.id)
        .collect();
    assert!(
        all.contains(&a.id) && all.contains(&b.id),
        "list by managed-by finds both VMs"
    );

    let mut only_a = managed_by_suite();
    only_a.insert("conpaas.io/node".into(), "node-tags-a".into());
    let found: Vec<String> = cloud
        .list(&only_a)
        .await
        .expect("list")
        .into_iter()
        .map(|vm| vm.id)
        .collect();
    assert_eq!(
        found,
        vec![a.id.clone()],
        "list by node tag finds exactly that VM"
    );

    // Described by id, a VM shows the tags that name its owner (the operator checks them before
    // it adopts or terminates a VM a status names).
    let described = cloud.get(&a.id).await.expect("get").expect("VM a");
    assert_eq!(
        described.tags.get("conpaas.io/node").map(String::as_str),
        Some("node-tags-a"),
        "get shows the VM's tags"
    );

    let mut nobody = Tags::new();
    nobody.insert("conpaas.io/managed-by".into(), "someone-else".into());
    assert!(
        cloud.list(&nobody).await.expect("list").is_empty(),
        "no VM carries a foreign tag"
    );
    for id in [a.id, b.id] {
        cloud.delete(&id).await.expect("delete");
    }
}

async fn delete_is_idempotent_and_final(cloud: &dyn ComputeDriver) {
    let vm = cloud.create(&request("del-1")).await.expect("create");
    cloud.delete(&vm.id).await.expect("delete");
    cloud
        .delete(&vm.id)
        .await
        .expect("deleting a deleted VM succeeds");
    let after = cloud.get(&vm.id).await.expect("get after delete");
    // Real clouds take a while to shut a VM down (EC2 shutting-down, OpenNebula SHUTDOWN and
    // EPILOG): right after the delete it may still be stopping, never running.
    let gone = |state: VmState| matches!(state, VmState::Terminated | VmState::Stopping);
    assert!(
        after.is_none_or(|vm| gone(vm.state)),
        "a deleted VM is absent, stopping or terminated"
    );
    let listed = cloud.list(&managed_by_suite()).await.expect("list");
    assert!(
        listed.iter().all(|v| v.id != vm.id || gone(v.state)),
        "a deleted VM is not listed as live"
    );
    assert!(
        cloud
            .get("does-not-exist")
            .await
            .expect("get of an unknown ID")
            .is_none()
    );
}

async fn tags_can_be_added(cloud: &dyn ComputeDriver) {
    let vm = cloud.create(&request("retag-1")).await.expect("create");
    let extra = Tags::from([("conpaas.io/orphaned".to_string(), "true".to_string())]);
    cloud.set_tags(&vm.id, &extra).await.expect("set tags");
    let got = cloud
        .get(&vm.id)
        .await
        .expect("get")
        .expect("the VM exists");
    assert_eq!(
        got.tags.get("conpaas.io/orphaned").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        got.tags.get("conpaas.io/node"),
        vm.tags.get("conpaas.io/node"),
        "other tags are kept"
    );
    assert_eq!(
        cloud.list(&extra).await.expect("list").len(),
        1,
        "the new tag is listed by"
    );
    cloud.delete(&vm.id).await.expect("delete");
    let err = cloud
        .set_tags("does-not-exist", &extra)
        .await
        .expect_err("tagging a missing VM fails");
    assert_eq!(err.category(), "NotFound");
}

async fn invalid_tokens_are_refused(cloud: &dyn ComputeDriver) {
    for token in ["", "has/slash", &"x".repeat(65)] {
        let err = cloud
            .create(&request(token))
            .await
            .expect_err("an invalid token is refused");
        assert_eq!(err.category(), "Other", "token {token:?}");
    }
}
