//! Tenants: two namespaces made by `cpsctl tenant create`, each used through the kubeconfig it
//! hands out (a real token, not admin). A tenant uses ConPaaS in its namespace through the
//! chart's roles aggregated into `edit`, and reaches nothing of the other one; ServiceNodes and
//! grants are the controller's and the administrators'; a Cloud admits only the namespaces its
//! `allowedNamespaces` selects; a hand-made node gets no VM; the chart's admission policies
//! refuse what they can.

mod common;

use common::*;
use conpaas_crds::v1alpha1::{CreditAccount, Service, ServiceNode};
use conpaas_e2e::tools::{cpsctl, repo_root, run};
use conpaas_e2e::wait;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::json;

/// The chart's tenant roles, applied as the chart would.
fn tenant_roles() -> String {
    std::fs::read_to_string(repo_root().join("charts/conpaas/templates/tenant-roles.yaml"))
        .expect("the chart's tenant roles")
}

/// A client from the kubeconfig `cpsctl tenant create --kubeconfig-out` wrote.
async fn client_from(path: &std::path::Path) -> Client {
    let config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(path).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        config.default_namespace,
        path.file_stem().unwrap().to_str().unwrap()
    );
    Client::try_from(config).unwrap()
}

/// The HTTP status of a refused call, 0 when it succeeded.
fn refusal<T>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 0,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("not an API refusal: {e}"),
    }
}

fn app_and_hello(count: i32, links: serde_json::Value) -> String {
    format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {{name: demo}}\nspec: {{cloud: local}}\n---\n\
         apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: hello}}\n\
         spec: {{application: demo, type: helloworld, roles: [{{name: node, count: {count}}}], links: {links}}}\n"
    )
}

async fn apply_as(client: &Client, ns: &str, yaml: &str) -> anyhow::Result<()> {
    conpaas_e2e::manifest::apply(client, yaml, ns).await
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_use_their_namespace_and_reach_nothing_of_each_other() {
    let env = env("tenants-e2e", 53).await;
    env.apply(&tenant_roles()).await;
    // The Cloud admits tenants only: the test's own namespace carries no tenant label.
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: local}\n\
         spec: {local: {}, allowedNamespaces: {matchExpressions: [{key: conpaas.io/tenant, operator: Exists}]}}\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    for (tenant, credits) in [("alpha", "100"), ("beta", "100")] {
        let kubeconfig = dir.path().join(format!("{tenant}.kubeconfig"));
        let args = [
            "tenant",
            "create",
            tenant,
            "--user",
            &format!("{tenant}@example.org"),
            "--credits",
            credits,
            "--kubeconfig-out",
            kubeconfig.to_str().unwrap(),
        ];
        let out = run(&cpsctl(), &args, &env.cp.kubeconfig, None)
            .unwrap()
            .ok();
        assert!(out.stdout.contains("credits"), "{}", out.stdout);
    }
    let alpha = client_from(&dir.path().join("alpha.kubeconfig")).await;
    let beta = client_from(&dir.path().join("beta.kubeconfig")).await;

    // Each tenant runs a Service in its own namespace (once the aggregation controller has
    // folded ConPaaS' roles into `edit`).
    for (client, ns) in [(&alpha, "alpha"), (&beta, "beta")] {
        wait::until(&format!("{ns} may apply its Services"), LIMIT, || async {
            Ok(apply_as(client, ns, &app_and_hello(1, json!([])))
                .await
                .is_ok())
        })
        .await
        .unwrap();
    }
    for ns in ["alpha", "beta"] {
        let services: Api<Service> = Api::namespaced(env.client.clone(), ns);
        wait::until(&format!("{ns}/hello running"), LIMIT, || async {
            let s = services.get("hello").await?;
            Ok(s.status.and_then(|st| st.ready).as_deref() == Some("node 1/1"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", tail(&env.controller.log(), 40)));
    }
    // Reading its own: Services, nodes, credits.
    let own_nodes: Api<ServiceNode> = Api::namespaced(alpha.clone(), "alpha");
    let alpha_node = own_nodes.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(alpha_node.len(), 1);
    let own_account: Api<CreditAccount> = Api::namespaced(alpha.clone(), "alpha");
    assert_eq!(own_account.get("credits").await.unwrap().spec.grant, 100);

    // Nothing of beta's: list, read, change, delete; nodes, credits, code, logs.
    let theirs: Api<Service> = Api::namespaced(alpha.clone(), "beta");
    let mut refusals = vec![
        (
            "list services",
            refusal(theirs.list(&ListParams::default()).await),
        ),
        ("get a service", refusal(theirs.get("hello").await)),
        (
            "patch a service",
            refusal(
                theirs
                    .patch(
                        "hello",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"state": "Stopped"}})),
                    )
                    .await,
            ),
        ),
        (
            "delete a service",
            refusal(theirs.delete("hello", &DeleteParams::default()).await),
        ),
        (
            "list nodes",
            refusal(
                Api::<ServiceNode>::namespaced(alpha.clone(), "beta")
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "list applications",
            refusal(
                Api::<conpaas_crds::v1alpha1::Application>::namespaced(alpha.clone(), "beta")
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "get credits",
            refusal(
                Api::<CreditAccount>::namespaced(alpha.clone(), "beta")
                    .get("credits")
                    .await,
            ),
        ),
    ];
    let (status, _) = api_get(
        &alpha,
        &conpaas_crds::code_api::archives_path("beta", "hello"),
    )
    .await;
    refusals.push(("list code archives", status));
    let beta_node = Api::<ServiceNode>::namespaced(env.client.clone(), "beta")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let (status, _) = api_get(
        &alpha,
        &format!(
            "{}?node={}",
            conpaas_crds::code_api::logs_path("beta", "hello"),
            beta_node.metadata.name.as_deref().unwrap()
        ),
    )
    .await;
    refusals.push(("read logs", status));
    // Its own node: a tenant reads it, never writes it; nor its grant or its ledger.
    let hand_made: ServiceNode = serde_json::from_value(json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode",
        "metadata": {"name": "extra"},
        "spec": {"application": "demo", "service": "hello", "serviceType": "helloworld",
            "role": "node", "cloud": "local", "token": "made-up"},
    }))
    .unwrap();
    refusals.push((
        "create a node",
        refusal(own_nodes.create(&PostParams::default(), &hand_made).await),
    ));
    refusals.push((
        "raise its own grant",
        refusal(
            own_account
                .patch(
                    "credits",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"grant": 1000000}})),
                )
                .await,
        ),
    ));
    refusals.push((
        "write its own ledger",
        refusal(
            own_account
                .patch_status(
                    "credits",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"used": 0}})),
                )
                .await,
        ),
    ));
    // A node's token reaches its own node and nothing of the other tenant.
    let node_name = alpha_node[0].metadata.name.clone().unwrap();
    let node_token = service_account_token(&env, "alpha", &node_name).await;
    let node_client = client_with_token(&env, &node_token).await;
    assert!(
        Api::<ServiceNode>::namespaced(node_client.clone(), "alpha")
            .get(&node_name)
            .await
            .is_ok()
    );
    refusals.push((
        "node token: the other tenant's node",
        refusal(
            Api::<ServiceNode>::namespaced(node_client.clone(), "beta")
                .get(beta_node.metadata.name.as_deref().unwrap())
                .await,
        ),
    ));
    refusals.push((
        "node token: the other tenant's services",
        refusal(
            Api::<Service>::namespaced(node_client, "beta")
                .list(&ListParams::default())
                .await,
        ),
    ));
    // Cloud credentials are Secrets in the controller's namespace (`default` here).
    refusals.push((
        "read the controller's Secrets",
        refusal(
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(alpha.clone(), "default")
                .list(&ListParams::default())
                .await,
        ),
    ));
    println!("refusals: {refusals:?}");
    let allowed: Vec<_> = refusals.iter().filter(|(_, code)| *code != 403).collect();
    assert!(allowed.is_empty(), "not refused with 403: {allowed:?}");

    // A link names a Service of the same namespace: alpha cannot reach beta's `betadb`.
    apply_as(
        &beta,
        "beta",
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: betadb}\n\
         spec: {application: demo, type: helloworld, roles: [{name: node, count: 0}]}\n",
    )
    .await
    .unwrap();
    apply_as(
        &alpha,
        "alpha",
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: linker}\n\
         spec: {application: demo, type: generic, roles: [{name: node, count: 1}], links: [{service: betadb}]}\n",
    )
    .await
    .unwrap();
    let alpha_services: Api<Service> = Api::namespaced(env.client.clone(), "alpha");
    wait::until("the cross-tenant link refused", LIMIT, || async {
        let s = alpha_services.get("linker").await?;
        Ok(s.status
            .is_some_and(|st| st.conditions.iter().any(|c| c.reason == "LinkNotFound")))
    })
    .await
    .unwrap();

    // A Cloud that does not admit a namespace: its Service is refused, with the reason.
    // (The example's Application and Service, not its Cloud, which admits every namespace.)
    let app_and_service: Vec<&str> = EXAMPLE.split("---").skip(1).collect();
    env.apply(&app_and_service.join("---").replace("count: 3", "count: 1"))
        .await;
    env.wait_service("hello", "refused by the Cloud", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.reason == "CloudNotAllowed"
                    && c.message.contains("tenants-e2e")
            })
        })
    })
    .await;

    // A ServiceNode written by an administrator, with no Service behind it, gets no VM.
    let admins_nodes: Api<ServiceNode> = Api::namespaced(env.client.clone(), "alpha");
    admins_nodes
        .create(&PostParams::default(), &hand_made)
        .await
        .unwrap();
    let nodes = admins_nodes.clone();
    wait::until("the hand-made node refused", LIMIT, || async {
        let n = nodes.get("extra").await?;
        Ok(n.status.is_some_and(|st| {
            st.conditions.iter().any(|c| c.reason == "NoOwningService") && st.provider_id.is_none()
        }))
    })
    .await
    .unwrap();
    // Reconciled again, it still gets no VM.
    env.poke_and_wait_reconciled(&admins_nodes, "extra").await;
    let extra = admins_nodes.get("extra").await.unwrap();
    assert!(
        extra.status.unwrap().provider_id.is_none(),
        "no VM for a hand-made node"
    );
    admins_nodes
        .delete("extra", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_admission_policies_refuse_hand_made_nodes_and_services_without_credits() {
    let env = env("admission-e2e", 54).await;
    env.apply_cloud_and_app().await;
    // The chart's policies; the controller here runs as `admin`.
    env.apply_admission_policies().await;

    // Someone with every right but the controller's name cannot create a ServiceNode.
    let mut config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&env.cp.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some("mallory".into());
    config.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
    let mallory = Client::try_from(config).unwrap();
    let node: ServiceNode = serde_json::from_value(json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode",
        "metadata": {"name": "extra"},
        "spec": {"application": "demo", "service": "hello", "serviceType": "helloworld",
            "role": "node", "cloud": "local", "token": "made-up"},
    }))
    .unwrap();
    let nodes: Api<ServiceNode> = Api::namespaced(mallory.clone(), &env.ns);
    // A policy takes effect within a second or so of being created: ask with dry runs (admission
    // runs, nothing is stored) until it does.
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait::until("the node policy to refuse", LIMIT, || async {
        Ok(nodes.create(&dry_run, &node).await.is_err())
    })
    .await
    .unwrap();
    let error = nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("created by the ConPaaS controller only"),
        "{error}"
    );

    // A namespace whose credits ran out may not start a Service.
    let accounts: Api<CreditAccount> = Api::namespaced(env.client.clone(), &env.ns);
    accounts
        .create(
            &PostParams::default(),
            &CreditAccount::new(
                "credits",
                conpaas_crds::v1alpha1::CreditAccountSpec { grant: 0 },
            ),
        )
        .await
        .unwrap();
    env.apply(
        &EXAMPLE
            .split("---")
            .nth(2)
            .unwrap()
            .replace("count: 3", "count: 1"),
    )
    .await;
    env.wait_service("hello", "held for its credits", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "CreditsExhausted")
        })
    })
    .await;
    let services: Api<Service> = Api::namespaced(mallory, &env.ns);
    let second: Service = serde_json::from_value(json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "second"},
        "spec": {"application": "demo", "type": "helloworld", "roles": [{"name": "node", "count": 1}]},
    }))
    .unwrap();
    let error = services
        .create(&PostParams::default(), &second)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("credits of namespace admission-e2e are exhausted"),
        "{error}"
    );
    // The node the Service made before its credits were read goes (its deletion may take a
    // pass of the credits loop).
    wait::until("no node without credits", LIMIT, || async {
        Ok(env.nodes("hello").await.is_empty())
    })
    .await
    .unwrap();
}
