//! An agent's token (what reaches its VM) can read its own ServiceNode and patch its status, and
//! nothing else: not another node, not a Service, not a Secret, not its own spec.

mod common;

use common::*;
use conpaas_crds::bootstrap::AgentBootstrap;
use conpaas_crds::v1alpha1::{Service, ServiceNode};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchParams};
use kube::{Client, Config};
use serde_json::json;

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what} must be forbidden, got {other:?}"),
    }
}

async fn agent_client(env: &Env, node: &ServiceNode) -> Client {
    let user_data = env
        .state
        .path()
        .join("vms")
        .join(&node.spec.token)
        .join("user-data");
    let boot: AgentBootstrap = serde_json::from_slice(&std::fs::read(user_data).unwrap()).unwrap();
    let mut config = Config::new(boot.api_server_url.parse().unwrap());
    config.root_cert = Some(boot.ca_certs.iter().map(|c| c.0.clone()).collect());
    config.auth_info.token = Some(boot.token.into());
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_token_reaches_only_its_own_node() {
    let env = env("credentials-e2e", 38).await;
    env.apply(&EXAMPLE.replace("count: 3", "count: 2")).await;
    env.wait_ready("hello", "node 2/2").await;
    let nodes = env.nodes("hello").await;
    let (mine, other) = (&nodes[0], &nodes[1]);
    let (my_name, other_name) = (
        mine.metadata.name.clone().unwrap(),
        other.metadata.name.clone().unwrap(),
    );
    let agent = agent_client(&env, mine).await;
    let node_api: Api<ServiceNode> = Api::namespaced(agent.clone(), &env.ns);

    // What the agent needs works.
    node_api.get(&my_name).await.expect("read its own node");
    let own_status = json!({"apiVersion": "conpaas.io/v1alpha1", "kind": "ServiceNode", "status": {"agent": {"message": "probe"}}});
    node_api
        .patch_status(
            &my_name,
            &PatchParams::apply("conpaas-agent").force(),
            &Patch::Apply(&own_status),
        )
        .await
        .expect("patch its own status");
    let own_watch = WatchParams::default().fields(&format!("metadata.name={my_name}"));
    let mut stream = node_api
        .watch(&own_watch, "0")
        .await
        .expect("watch its own node")
        .boxed();
    assert!(stream.next().await.is_some());

    // Nothing else does.
    forbidden(node_api.get(&other_name).await, "reading another node");
    forbidden(node_api.list(&ListParams::default()).await, "listing nodes");
    let other_watch = WatchParams::default().fields(&format!("metadata.name={other_name}"));
    forbidden(
        node_api.watch(&other_watch, "0").await.map(|_| ()),
        "watching another node",
    );
    forbidden(
        node_api
            .patch_status(
                &other_name,
                &PatchParams::apply("conpaas-agent").force(),
                &Patch::Apply(&own_status),
            )
            .await,
        "patching another node's status",
    );
    let spec_patch = json!({"spec": {"role": "master"}});
    forbidden(
        node_api
            .patch(
                &my_name,
                &PatchParams::default(),
                &Patch::Merge(&spec_patch),
            )
            .await,
        "patching its own spec",
    );
    let request = k8s_openapi::api::authentication::v1::TokenRequest::default();
    forbidden(
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(agent.clone(), &env.ns)
            .create_token_request(&other_name, &kube::api::PostParams::default(), &request)
            .await,
        "minting a token for another node",
    );
    forbidden(
        Api::<Service>::namespaced(agent.clone(), &env.ns)
            .get("hello")
            .await,
        "reading the Service",
    );
    forbidden(
        Api::<Secret>::namespaced(agent.clone(), &env.ns)
            .list(&ListParams::default())
            .await,
        "listing Secrets",
    );
    forbidden(
        Api::<Secret>::all(agent.clone())
            .list(&ListParams::default())
            .await,
        "listing Secrets cluster-wide",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_renew_their_own_token_before_it_expires() {
    let env = env_with(
        "token-e2e",
        47,
        &[
            ("CONPAAS_AGENT_TOKEN_TTL_SECONDS", "600"),
            ("CONPAAS_AGENT_TOKEN_REFRESH_SECONDS", "2"),
        ],
    )
    .await;
    env.apply(&EXAMPLE.replace("count: 3", "count: 2")).await;
    env.wait_ready("hello", "node 2/2").await;
    let nodes = env.nodes("hello").await;
    let node = &nodes[0];
    let vm = env.state.path().join("vms").join(&node.spec.token);
    let boot: AgentBootstrap =
        serde_json::from_slice(&std::fs::read(vm.join("user-data")).unwrap()).unwrap();
    let token_file = vm.join("work/token");
    conpaas_e2e::wait::until("the agent to renew its token", LIMIT, || async {
        Ok(std::fs::read_to_string(&token_file).is_ok_and(|t| !t.is_empty() && t != boot.token))
    })
    .await
    .unwrap();

    // The renewed token is the node's identity: it reads its own node, and no other.
    let mut config = Config::new(boot.api_server_url.parse().unwrap());
    config.root_cert = Some(boot.ca_certs.iter().map(|c| c.0.clone()).collect());
    config.auth_info.token = Some(std::fs::read_to_string(&token_file).unwrap().into());
    let renewed: Api<ServiceNode> = Api::namespaced(Client::try_from(config).unwrap(), &env.ns);
    renewed
        .get(node.metadata.name.as_deref().unwrap())
        .await
        .expect("the renewed token works");
    forbidden(
        renewed
            .get(nodes[1].metadata.name.as_deref().unwrap())
            .await,
        "reading another node with the renewed token",
    );
}
