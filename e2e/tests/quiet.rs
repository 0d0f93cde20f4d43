//! Loops read their caches and write only what differs: a converged Service and its Ready
//! nodes, woken again and again, cost the API server no LIST or GET of ConPaaS objects and no
//! write but the test's own (and the agents' heartbeats).

mod common;

use std::collections::BTreeMap;

use common::*;
use conpaas_e2e::apiserver::{WRITES, grown, requests_by};
use kube::api::{Patch, PatchParams};

const CONPAAS: [&str; 4] = ["services", "servicenodes", "applications", "clouds"];

#[tokio::test(flavor = "multi_thread")]
async fn reconciling_a_converged_service_reads_caches_and_writes_nothing() {
    let env = env("quiet-e2e", 50).await;
    env.apply(&EXAMPLE).await;
    env.wait_ready("hello", "node 3/3").await;
    // The Cloud counts the nodes after a short debounce: converged when it shows all three.
    let clouds: kube::Api<conpaas_crds::v1alpha1::Cloud> = kube::Api::all(env.client.clone());
    conpaas_e2e::wait::until("the Cloud to count 3 nodes", LIMIT, || async {
        let cloud = clouds.get("local").await?;
        Ok(cloud.status.and_then(|s| s.nodes) == Some(3))
    })
    .await
    .unwrap();
    let nodes: Vec<String> = env
        .nodes("hello")
        .await
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let reads_before = requests_by(&env.client, &["LIST", "GET"]).await.unwrap();
    let writes_before = requests_by(&env.client, &WRITES).await.unwrap();

    // Wake the loops: a metadata-only change reconciles the Service and each node (and the
    // Application and Cloud through them), three times over. Each round waits for the
    // controller's own count to show the reconciles it caused, so the reads and writes counted
    // below are those of reconciles that ran.
    for round in 0..3 {
        let before = env.reconciles().await;
        let poke = serde_json::json!({"metadata": {"annotations": {"e2e.conpaas.io/poke": round.to_string()}}});
        env.services()
            .patch("hello", &PatchParams::default(), &Patch::Merge(&poke))
            .await
            .unwrap();
        for node in &nodes {
            env.nodes_api()
                .patch(node, &PatchParams::default(), &Patch::Merge(&poke))
                .await
                .unwrap();
        }
        let wanted = [("Service", 1), ("ServiceNode", nodes.len() as u64)];
        conpaas_e2e::wait::until("the pokes reconciled", LIMIT, || async {
            let now = env.reconciles().await;
            let count =
                |map: &BTreeMap<String, u64>, kind: &str| map.get(kind).copied().unwrap_or(0);
            Ok(wanted
                .iter()
                .all(|(kind, n)| count(&now, kind) >= count(&before, kind) + n))
        })
        .await
        .unwrap();
    }
    let reads = grown(
        &reads_before,
        &requests_by(&env.client, &["LIST", "GET"]).await.unwrap(),
    );
    let writes = grown(
        &writes_before,
        &requests_by(&env.client, &WRITES).await.unwrap(),
    );
    let conpaas_reads: BTreeMap<&String, &u64> = reads
        .iter()
        .filter(|(k, _)| CONPAAS.iter().any(|r| k.contains(&format!(" {r}/"))))
        .collect();
    assert!(
        conpaas_reads.is_empty(),
        "the loops read their caches, not the API server: {conpaas_reads:?}"
    );
    let not_heartbeats: BTreeMap<String, u64> = writes
        .into_iter()
        .filter(|(k, _)| !k.ends_with(" leases/"))
        .collect();
    assert_eq!(
        not_heartbeats,
        BTreeMap::from([
            ("PATCH services/".to_string(), 3),
            ("PATCH servicenodes/".to_string(), 9),
        ]),
        "nothing but the test's own writes"
    );
}
