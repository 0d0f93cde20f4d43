//! Story 6: invalid manifests are rejected by the API server with a message naming the field;
//! a Service that passes the schema but cannot be satisfied gets Ready=False with a reason and an
//! Event, while the controller keeps serving everything else.

mod common;

use common::*;
use serde_json::json;

fn service(name: &str, spec: serde_json::Value) -> String {
    serde_yaml::to_string(&json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "Service", "metadata": {"name": name}, "spec": spec})).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifests_are_rejected_naming_the_field() {
    let env = env("invalid-e2e", 35).await;
    let cases = [
        (service("a", json!({"application": "demo", "type": "wordpress", "roles": []})), "spec.type"),
        (service("b", json!({"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": -1}]})), "spec.roles[0].count"),
        (service("c", json!({"application": "demo", "type": "generic", "roles": [{"name": "master", "count": 2}]})), "spec.roles[master].count"),
        (service("d", json!({"application": "demo", "type": "helloworld", "roles": [{"name": "web", "count": 1}]})), "spec.roles"),
        (service("e", json!({"application": "demo", "type": "generic", "roles": [{"name": "master", "count": 1}, {"name": "master", "count": 1}]})), ".spec.roles: duplicate entries for key [name=\"master\"]"),
        (
            service("f", json!({"application": "demo", "type": "generic", "code": {"active": "v2", "versions": [{"name": "v1", "url": "https://example.org/a.tar"}]}})),
            "sha256",
        ),
        ("apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: none}\nspec: {}\n".to_string(), "exactly one of spec.local, spec.ec2 or spec.opennebula"),
        (
            "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: two}\nspec: {local: {}, opennebula: {endpoint: 'http://one:2633/RPC2', templateId: 0, credentialsSecret: {name: one}}}\n".to_string(),
            "exactly one of spec.local, spec.ec2 or spec.opennebula",
        ),
    ];
    for (yaml, field) in cases {
        let err = conpaas_e2e::manifest::apply(&env.client, &yaml, &env.ns)
            .await
            .expect_err(&format!("rejected: {yaml}"));
        let message = format!("{err:#}");
        assert!(
            message.contains(field),
            "the error names {field}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsatisfiable_service_says_why_and_the_rest_keeps_working() {
    let env = env("unsatisfiable-e2e", 36).await;
    env.apply(&EXAMPLE).await;
    env.apply(&service("orphan", json!({"application": "nowhere", "type": "helloworld", "roles": [{"name": "node", "count": 1}]}))).await;
    env.apply(&service("lost", json!({"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": 1, "cloud": "mars"}]}))).await;
    env.wait_ready("hello", "node 3/3").await;

    for (name, reason) in [("orphan", "ApplicationNotFound"), ("lost", "CloudNotFound")] {
        env.wait_service(name, &format!("{name} Ready=False {reason}"), |s| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
            })
        })
        .await;
        env.wait_event(&env.ns, reason, Some(name)).await;
    }
    assert!(
        env.nodes("orphan").await.is_empty() && env.nodes("lost").await.is_empty(),
        "no VM for an unsatisfiable service"
    );

    // The healthy service still scales, and the broken one recovers once its Application exists.
    env.scale_hello(4).await;
    env.wait_ready("hello", "node 4/4").await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: nowhere}\nspec: {cloud: local}\n").await;
    env.wait_ready("orphan", "node 1/1").await;
}
