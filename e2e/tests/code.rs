//! Code delivery through the artifact store: `cpsctl code upload` streams an archive through the
//! API server to the controller's code API, the Service gets the version, and its node's agent
//! fetches it with its own token and runs it. RBAC decides who may upload and download: a user
//! without `update` on the Service stores nothing, one without `get` reads nothing, and a node
//! token of one Service cannot fetch another Service's code. The agents' log endpoint answers
//! only those RBAC allows `get` on the Service's logs.

mod common;

use std::path::Path;

use common::*;
use conpaas_crds::code_api::{archive_path, archives_path, logs_path};
use conpaas_e2e::tools::{Ran, cpsctl, run};
use sha2::{Digest, Sha256};

const NS: &str = "code-e2e";

fn cps(kubeconfig: &Path, args: &[&str]) -> Ran {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    run(&cpsctl(), &all, kubeconfig, None).expect("cpsctl")
}

/// A generic Service's scripts; run.sh says which version runs.
fn site(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("init.sh"), "echo init\n").unwrap();
    std::fs::write(
        dir.join("run.sh"),
        format!("echo {version} > ../../running.txt\nexec sleep 600\n"),
    )
    .unwrap();
}

/// A ServiceAccount `name` with `rules` in the namespace, and a kubeconfig with its token.
async fn user(env: &Env, name: &str, rules: serde_json::Value) -> (std::path::PathBuf, String) {
    let apply = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}}}\nrules: {rules}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}\nsubjects: [{{kind: ServiceAccount, name: {name}, namespace: {NS}}}]\n"
    );
    env.apply(&apply).await;
    let token = service_account_token(env, NS, name).await;
    (env.cp.kubeconfig_with_token(name, &token).unwrap(), token)
}

fn stored_archives(env: &Env) -> Vec<String> {
    let dir = env.state.path().join("artifacts/sha256");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn uploaded_code_runs_on_the_nodes_and_rbac_decides_who_may_touch_it() {
    // Archives no version names are swept 3 s after they were written.
    let env = env_with(
        NS,
        51,
        &[
            ("CONPAAS_ARTIFACT_GC_GRACE_SECONDS", "3"),
            ("CONPAAS_ARTIFACT_GC_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    env.apply_cloud_and_app().await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: gen}\nspec: {application: demo, type: generic, roles: [{name: master, count: 1}]}\n---\napiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: other}\nspec: {application: demo, type: generic, state: Stopped, roles: [{name: master, count: 1}]}\n").await;
    let admin = env.cp.kubeconfig.clone();
    let work = tempfile::tempdir().unwrap();
    // The API server routes code.conpaas.io once it has found the controller serving it.
    env.wait_code_api().await;

    // Upload a directory as v1 and activate it: the node runs it.
    site(&work.path().join("v1"), "v1");
    let v1 = work.path().join("v1");
    let out = cps(
        &admin,
        &[
            "code",
            "upload",
            "gen",
            v1.to_str().unwrap(),
            "--version",
            "v1",
            "--activate",
        ],
    )
    .ok();
    assert!(out.stdout.contains("version v1 uploaded"), "{}", out.stdout);
    env.wait_service("gen", "v1 running on every node", |s| {
        conpaas_crds::v1alpha1::is_condition_true(
            &s.status.clone().unwrap_or_default().conditions,
            "Ready",
        )
    })
    .await;
    let node = env.nodes("gen").await.remove(0);
    wait_running(&env, &node, "v1").await;
    let service = env.services().get("gen").await.unwrap();
    let sha = service.spec.code.as_ref().unwrap().versions[0]
        .artifact
        .as_ref()
        .unwrap()
        .sha256
        .clone();
    assert_eq!(stored_archives(&env), vec![sha.clone()]);

    // list shows it active, with its size and when it was stored; download gives the same
    // bytes back.
    let listed = cps(&admin, &["code", "list", "gen"]).ok().stdout;
    let today = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d")
        .to_string();
    assert!(
        listed.lines().any(|l| l.starts_with("v1")
            && l.contains("artifact")
            && l.contains(" B ")
            && l.contains(&today)
            && l.trim_end().ends_with('*')),
        "{listed}"
    );
    let copy = work.path().join("v1.tar.gz");
    cps(
        &admin,
        &[
            "code",
            "download",
            "gen",
            "v1",
            "-o",
            copy.to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(
        hex::encode(Sha256::digest(std::fs::read(&copy).unwrap())),
        sha
    );

    // A reader (get on the Service, and the code API's paths) may download but not upload, and
    // its upload stores nothing.
    let code_paths = serde_json::json!([
        {"apiGroups": ["conpaas.io"], "resources": ["services"], "verbs": ["get", "list"]},
        {"apiGroups": ["code.conpaas.io"], "resources": ["services/archives"], "verbs": ["create", "get"]},
    ]);
    let (reader, _) = user(&env, "reader", code_paths).await;
    site(&work.path().join("v2"), "v2");
    let v2 = work.path().join("v2");
    let refused = cps(
        &reader,
        &[
            "code",
            "upload",
            "gen",
            v2.to_str().unwrap(),
            "--version",
            "v2",
        ],
    );
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("403") && refused.stderr.contains("may not update"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        stored_archives(&env),
        vec![sha.clone()],
        "a refused upload stores nothing"
    );
    let copy2 = work.path().join("reader.tar.gz");
    cps(
        &reader,
        &[
            "code",
            "download",
            "gen",
            "v1",
            "-o",
            copy2.to_str().unwrap(),
        ],
    )
    .ok();

    // A stranger may use the code API's paths but has no right on the Service: 403, no bytes.
    let only_paths = serde_json::json!([
        {"apiGroups": ["code.conpaas.io"], "resources": ["services/archives"], "verbs": ["create", "get"]},
    ]);
    let (_, stranger_token) = user(&env, "stranger", only_paths).await;
    let stranger = client_with_token(&env, &stranger_token).await;
    let (status, body) = api_get(&stranger, &archive_path(NS, "gen", &sha)).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("may not get"));

    // Logs, through the code API: the stranger is refused by the API server; a user allowed
    // the logs path but not the Service by the controller; a user allowed both reads the log,
    // which the controller fetched from the agent.
    let logs = format!(
        "{}?node={}&tail=500",
        logs_path(NS, "gen"),
        node.metadata.name.as_deref().unwrap()
    );
    let (status, _) = api_get(&stranger, &logs).await;
    assert_eq!(status, 403);
    let logs_path_only = serde_json::json!([
        {"apiGroups": ["code.conpaas.io"], "resources": ["services/logs"], "verbs": ["get"]},
    ]);
    let (_, path_only_token) = user(&env, "logs-path-only", logs_path_only).await;
    let path_only = client_with_token(&env, &path_only_token).await;
    let (status, body) = api_get(&path_only, &logs).await;
    let said = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{said}");
    assert!(
        said.contains("may not get"),
        "refused by the controller: {said}"
    );
    let logs_rules = serde_json::json!([
        {"apiGroups": ["code.conpaas.io"], "resources": ["services/logs"], "verbs": ["get"]},
        {"apiGroups": ["conpaas.io"], "resources": ["services"], "verbs": ["get"]},
    ]);
    let (_, log_reader_token) = user(&env, "log-reader", logs_rules).await;
    let log_reader = client_with_token(&env, &log_reader_token).await;
    let (status, body) = api_get(&log_reader, &logs).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("agent starting"), "{body}");
    // The agent itself answers only over TLS, and only to the node's log key: a user's token
    // (which no client of ConPaaS sends it any more) opens nothing.
    let address = node.status.clone().unwrap().address.unwrap();
    assert_eq!(agent_log(&address, Some(&log_reader_token)).await.0, 401);
    assert_eq!(agent_log(&address, None).await.0, 401);

    // The node's own token fetches its Service's archive, and not another Service's.
    let node_token = service_account_token(&env, NS, node.metadata.name.as_deref().unwrap()).await;
    let agent = client_with_token(&env, &node_token).await;
    let (status, body) = api_get(&agent, &archive_path(NS, "gen", &sha)).await;
    assert_eq!(
        (status, Sha256::digest(&body).to_vec()),
        (200, hex::decode(&sha).unwrap())
    );
    let (status, _) = api_get(&agent, &archive_path(NS, "other", &sha)).await;
    assert_eq!(status, 403);
    // An archive no version of the Service names is not served, whoever asks.
    let (status, _) = api_get(&env.client, &archive_path(NS, "other", &sha)).await;
    assert_eq!(status, 404);

    // An upload whose bytes do not match the digest it claims stores nothing.
    let request = http::Request::post(format!(
        "{}?sha256={}",
        archives_path(NS, "gen"),
        "0".repeat(64)
    ))
    .body(b"not the archive".to_vec())
    .unwrap();
    let response = env.client.send(request.map(Into::into)).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(stored_archives(&env), vec![sha.clone()]);

    // The active version cannot be deleted; another one can.
    let refused = cps(&admin, &["code", "delete", "gen", "v1"]);
    assert!(refused.stderr.contains("is active"), "{}", refused.stderr);
    cps(
        &admin,
        &[
            "code",
            "upload",
            "gen",
            v2.to_str().unwrap(),
            "--version",
            "v2",
        ],
    )
    .ok();
    cps(&admin, &["code", "activate", "gen", "v2"]).ok();
    wait_running(&env, &node, "v2").await;
    // Back to v1 with a rollback, then forward again to v2, which leaves v1 deletable.
    cps(&admin, &["code", "rollback", "gen"]).ok();
    let back = env.services().get("gen").await.unwrap();
    assert_eq!(back.spec.code.unwrap().active.as_deref(), Some("v1"));
    env.wait_service("gen", "v2 recorded as the previous version", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.previous_code_version.as_deref())
            == Some("v2")
    })
    .await;
    cps(&admin, &["code", "rollback", "gen"]).ok();
    cps(&admin, &["code", "delete", "gen", "v1"]).ok();
    let listed = cps(&admin, &["code", "list", "gen"]).ok().stdout;
    assert!(!listed.contains("v1") && listed.contains("v2"), "{listed}");
    // v1's archive, named by no version now, leaves the store; v2's stays.
    let v2_sha = env
        .services()
        .get("gen")
        .await
        .unwrap()
        .spec
        .code
        .unwrap()
        .versions[0]
        .artifact
        .clone()
        .unwrap()
        .sha256;
    conpaas_e2e::wait::until("v1's archive to be swept", LIMIT, || {
        let left = stored_archives(&env);
        let v2_sha = v2_sha.clone();
        async move { Ok(left == vec![v2_sha]) }
    })
    .await
    .unwrap();
}

/// Four uploads of about 1 MiB each, side by side, into a namespace whose quota holds 3 MiB:
/// each upload's room is what the others before it left, so the store never holds more than
/// the quota, and the refused ones say why.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_side_by_side_never_take_more_than_the_namespace_quota() {
    const QUOTA: u64 = 3 << 20;
    const NS_QUOTA: &str = "code-quota-e2e";
    // Archives nothing names are swept 3 s after they were written.
    let env = env_with(
        NS_QUOTA,
        155,
        &[
            ("CONPAAS_NAMESPACE_STORE_BYTES", &QUOTA.to_string()),
            ("CONPAAS_ARTIFACT_GC_GRACE_SECONDS", "3"),
            ("CONPAAS_ARTIFACT_GC_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    env.apply_cloud_and_app().await;
    // One Service each, so that the uploads do not also race for one Service's versions.
    for i in 0..4 {
        env.apply(&format!("apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: gen{i}}}\nspec: {{application: demo, type: generic, state: Stopped, roles: [{{name: master, count: 1}}]}}\n")).await;
    }
    env.wait_code_api().await;
    let work = tempfile::tempdir().unwrap();
    let uploads: Vec<std::thread::JoinHandle<Ran>> = (0..4)
        .map(|i| {
            // Random bytes: the archive is as large as the file.
            let dir = work.path().join(format!("v{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut noise = vec![0u8; 1 << 20];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").unwrap(),
                &mut noise,
            )
            .unwrap();
            std::fs::write(dir.join("noise.bin"), noise).unwrap();
            let kubeconfig = env.cp.kubeconfig.clone();
            std::thread::spawn(move || {
                let service = format!("gen{i}");
                let args = [
                    "-n",
                    NS_QUOTA,
                    "code",
                    "upload",
                    &service,
                    dir.to_str().unwrap(),
                    "--version",
                    "v1",
                ];
                run(&cpsctl(), &args, &kubeconfig, None).expect("cpsctl")
            })
        })
        .collect();
    let ran: Vec<Ran> = uploads.into_iter().map(|u| u.join().unwrap()).collect();
    let stored = ran.iter().filter(|r| r.code == Some(0)).count();
    let refused: Vec<&Ran> = ran.iter().filter(|r| r.code != Some(0)).collect();
    // A refused upload's bytes may be written before the check: nothing names them, and the
    // collector sweeps them; what stays is within the quota.
    let dir = env.state.path().join("artifacts/sha256");
    let held = || -> (usize, u64) {
        let sizes: Vec<u64> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .collect();
        (sizes.len(), sizes.iter().sum())
    };
    let swept = conpaas_e2e::wait::until("the refused archives swept", LIMIT, || async {
        Ok(held().0 == stored)
    })
    .await;
    let (archives, bytes) = held();
    println!(
        "4 uploads of 1 MiB side by side, quota 3 MiB: {stored} stored, {} refused, {archives} archives of {bytes} bytes kept",
        refused.len()
    );
    swept.unwrap();
    assert!(
        bytes <= QUOTA,
        "the store keeps {bytes} bytes, over the quota"
    );
    let said: Vec<&str> = ran.iter().map(|r| r.stderr.as_str()).collect();
    assert_eq!(stored, 2, "two archives of just over 1 MiB fit: {said:?}");
    for r in refused {
        assert!(
            r.stderr.contains("CONPAAS_NAMESPACE_STORE_BYTES"),
            "refused in the quota's words: {}",
            r.stderr
        );
    }
}
