//! A hostile tenant at the doors that are not API calls on another namespace. Door by door:
//! a node's own credential (which the tenant holds: it is on the tenant's VM, and `edit` may
//! impersonate the namespace's ServiceAccounts) writing another tenant's VM id and an address of
//! its choosing into its node's status; and, were such a status written anyway, the controller
//! adopting or terminating the VM it names (it records the node's own VM again instead).

mod common;

use common::*;
use conpaas_cloud::ComputeDriver as _;
use conpaas_crds::v1alpha1::ServiceNode;
use conpaas_e2e::tools::{repo_root, run};
use conpaas_e2e::wait;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

const OTHER: &str = "hostile-tenant-b-e2e";

fn app_and_hello() -> String {
    "apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: demo}\nspec: {cloud: local}\n---\n\
     apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: hello}\n\
     spec: {application: demo, type: helloworld, roles: [{name: node, count: 1}]}\n"
        .to_string()
}

/// A client acting as `user` (impersonated by the test's administrator).
async fn acting_as(env: &Env, user: &str) -> Client {
    let mut config = Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&env.cp.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).unwrap()
}

/// `cpsctl` with `args` (a code upload; cpsctl itself waits out a controller that is still
/// starting).
async fn upload_code(env: &Env, args: &[&str]) {
    run(
        &conpaas_e2e::tools::cpsctl(),
        args,
        &env.cp.kubeconfig,
        None,
    )
    .unwrap()
    .ok();
}

fn provider_id(node: &ServiceNode) -> String {
    node.status.clone().and_then(|s| s.provider_id).unwrap()
}

fn address(node: &ServiceNode) -> String {
    node.status.clone().and_then(|s| s.address).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_tenant_reaches_nothing_of_another_tenant_through_its_node() {
    let env = env("hostile-tenant-e2e", 141).await;
    env.apply(EXAMPLE.split("---").next().unwrap()).await;
    env.apply(&app_and_hello()).await;
    // Tenant b, beside it on the same cloud.
    run(
        &conpaas_e2e::tools::kubectl(),
        &["create", "namespace", OTHER],
        &env.cp.kubeconfig,
        None,
    )
    .unwrap();
    conpaas_e2e::manifest::apply(&env.client, &app_and_hello(), OTHER)
        .await
        .unwrap();
    env.wait_ready("hello", "node 1/1").await;
    let theirs: Api<ServiceNode> = Api::namespaced(env.client.clone(), OTHER);
    let running = |n: &ServiceNode| {
        n.status
            .as_ref()
            .is_some_and(|s| s.address.is_some() && s.provider_id.is_some())
    };
    wait::until("tenant b's node running", LIMIT, || async {
        Ok(theirs
            .list(&Default::default())
            .await?
            .items
            .iter()
            .any(running))
    })
    .await
    .unwrap();
    let victim = theirs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .remove(0);
    let ours: Api<ServiceNode> = Api::namespaced(env.client.clone(), &env.ns);
    let own = env.nodes("hello").await.remove(0);
    let mut doors = 0;

    // Door 1: the node's own credential forges its status. The chart's policies (the
    // controller here runs as `admin`, so the policy exempts `admin`).
    env.apply_admission_policies().await;
    let node_account = acting_as(
        &env,
        &format!("system:serviceaccount:{}:{}", env.ns, own.name_any()),
    )
    .await;
    let as_node: Api<ServiceNode> = Api::namespaced(node_account, &env.ns);
    let forged =
        json!({"status": {"providerId": provider_id(&victim), "address": address(&victim)}});
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    // A policy takes effect within a second or so of being created.
    wait::until("the status policy to refuse", LIMIT, || async {
        Ok(as_node
            .patch_status(&own.name_any(), &dry_run, &Patch::Merge(&forged))
            .await
            .is_err_and(|e| e.to_string().contains("only status.agent")))
    })
    .await
    .unwrap();
    let refused = as_node
        .patch_status(
            &own.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&forged),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("only status.agent"),
        "{refused}"
    );
    // Nor may it remove what the controller wrote, or rewrite its conditions.
    for edit in [
        json!({"status": {"providerId": null, "address": null}}),
        json!({"status": {"conditions": []}}),
    ] {
        let refused = as_node
            .patch_status(
                &own.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&edit),
            )
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("only status.agent"),
            "{edit}: {refused}"
        );
    }
    // What its agent reports is still its own to write.
    as_node
        .patch_status(
            &own.name_any(),
            &dry_run,
            &Patch::Merge(&json!({"status": {"agent": {"message": "still reporting"}}})),
        )
        .await
        .expect("the node reports its agent's status");
    // And the agents' own reports land under the policy: a node made now becomes Ready.
    env.apply(&app_and_hello().replace("count: 1", "count: 2"))
        .await;
    env.wait_ready("hello", "node 2/2").await;
    doors += 1;

    // Door 2: a status naming tenant b's VM written anyway (here by someone the policy
    // exempts): the controller neither adopts that VM nor, when tenant a's Service goes,
    // terminates it.
    ours.patch_status(
        &own.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"providerId": provider_id(&victim)}})),
    )
    .await
    .unwrap();
    env.poke_and_wait_reconciled(&ours, &own.name_any()).await;
    // The Event says what happened, and nothing of whose VM it was.
    env.wait_event_where(&env.ns, "VmNotOwned", |e| {
        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(own.name_any().as_str())
            && e.note.as_deref().is_some_and(|n| !n.contains(OTHER))
    })
    .await;
    // The node's own VM is recorded again; tenant b's is never adopted.
    wait::until("the node's own VM recorded again", LIMIT, || async {
        let node = ours.get(&own.name_any()).await?;
        Ok(provider_id(&node) == provider_id(&own) && address(&node) == address(&own))
    })
    .await
    .unwrap();
    env.services()
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    wait::until("tenant a's node gone", LIMIT, || async {
        Ok(env.nodes("hello").await.is_empty())
    })
    .await
    .unwrap();
    let vm = provider_id(&victim);
    let still = env
        .controller
        .local_cloud()
        .get(vm.rsplit('/').next().unwrap())
        .await
        .unwrap();
    assert!(
        still.is_some_and(|vm| vm.state == conpaas_cloud::VmState::Running),
        "tenant b's VM runs on"
    );
    assert_eq!(
        theirs.get(&victim.name_any()).await.unwrap().uid(),
        victim.uid(),
        "tenant b's node is untouched"
    );
    doors += 1;
    println!("hostile tenant: {doors} doors tried, none opened");
}

/// The status policy compares every field of a node's status but `agent`: a field added to the
/// status later is guarded too, or this fails.
#[test]
fn the_status_policy_guards_every_status_field_but_the_agents() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(ServiceNode::crd()).unwrap();
    let fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]
        .as_object()
        .expect("the status schema's fields")
        .clone();
    let policy =
        std::fs::read_to_string(repo_root().join("charts/conpaas/templates/admission.yaml"))
            .unwrap();
    assert!(fields.contains_key("agent") && fields.len() > 5);
    for field in fields.keys().filter(|f| *f != "agent") {
        assert!(
            policy.contains(&format!(
                "object.status.{field} == oldObject.status.{field}"
            )),
            "the conpaas-servicenode-status policy does not guard status.{field}"
        );
    }
    assert!(
        !policy.contains("status.agent =="),
        "the agent's report stays its own"
    );
}

/// An administrator reads a tenant's logs with `cpsctl logs`: the logs come through the control
/// plane, and nothing of the administrator's credential reaches the tenant's VM, which a
/// hostile tenant controls (here: its agent is gone and a listener of the tenant's records what
/// arrives at the VM's log port).
#[tokio::test(flavor = "multi_thread")]
async fn an_administrators_cpsctl_logs_hands_no_credential_to_a_tenants_vm() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::PostParams;

    let env = env("hostile-logs-e2e", 142).await;
    env.apply_cloud_and_app().await;
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: hello}\n\
         spec: {application: demo, type: helloworld, roles: [{name: node, count: 1}]}\n",
    )
    .await;
    env.wait_ready("hello", "node 1/1").await;
    let node = env.nodes("hello").await.remove(0);

    // An administrator with a bearer token (a ServiceAccount bound to cluster-admin).
    env.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: ops}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {name: hostile-logs-ops}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n\
         subjects: [{kind: ServiceAccount, name: ops, namespace: hostile-logs-e2e}]\n",
    )
    .await;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap();
    let token = Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
        .create_token_request("ops", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let ops = env.cp.kubeconfig_with_token("ops", &token).unwrap();
    let logs = || {
        run(
            &conpaas_e2e::tools::cpsctl(),
            &["-n", &env.ns, "logs", "hello", "--tail", "20"],
            &ops,
            None,
        )
        .unwrap()
    };

    // The logs come through the API server (and `kubectl get --raw` reads the same path).
    let read = logs();
    assert!(
        read.stdout.contains("agent starting"),
        "{} {}",
        read.stdout,
        read.stderr
    );
    let raw = run(
        &conpaas_e2e::tools::kubectl(),
        &[
            "get",
            "--raw",
            &format!(
                "/apis/code.conpaas.io/v1alpha1/namespaces/{}/services/hello/logs?node={}&tail=20",
                env.ns,
                node.name_any()
            ),
        ],
        &ops,
        None,
    )
    .unwrap();
    assert!(
        raw.stdout.contains("agent starting"),
        "{} {}",
        raw.stdout,
        raw.stderr
    );

    // The tenant takes its VM over: its agent is gone, and what listens on the VM's log port
    // is the tenant's own TLS server, whose certificate the tenant reports for its node (the
    // node's own credential may write `status.agent`). It records what it hears, decrypted.
    env.controller
        .local_cloud()
        .power_off(&node.spec.token)
        .await
        .unwrap();
    let address = address(&node);
    let made = rcgen::generate_simple_self_signed(vec![address.clone()]).unwrap();
    let der = made.cert.der().to_vec();
    let pin = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der));
    let node_account = acting_as(
        &env,
        &format!("system:serviceaccount:{}:{}", env.ns, node.name_any()),
    )
    .await;
    Api::<ServiceNode>::namespaced(node_account, &env.ns)
        .patch_status(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"agent": {"logCertificateSha256": pin}}})),
        )
        .await
        .unwrap();
    wait::until(
        "the controller sees the tenant's certificate",
        LIMIT,
        || async {
            let n = env.nodes("hello").await.remove(0);
            Ok(n.status
                .and_then(|s| s.agent)
                .and_then(|a| a.log_certificate_sha256)
                == Some(pin.clone()))
        },
    )
    .await
    .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let tls = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.into()], key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind((address.as_str(), 5555)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = std::thread::spawn({
        let (heard, stop) = (heard.clone(), stop.clone());
        move || {
            use std::io::{Read, Write};
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((socket, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                socket.set_nonblocking(false).unwrap();
                socket
                    .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                let connection = rustls::ServerConnection::new(tls.clone()).unwrap();
                let mut stream = rustls::StreamOwned::new(connection, socket);
                let mut request = [0u8; 65536];
                if let Ok(n) = stream.read(&mut request) {
                    heard.lock().unwrap().extend_from_slice(&request[..n]);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\nthe tenant's own answer\n");
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
            }
        }
    });
    let read = logs();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    recorder.join().unwrap();
    let heard = heard.lock().unwrap().clone();
    assert!(
        !String::from_utf8_lossy(&heard).contains(&token),
        "the administrator's token reached the tenant's VM: {}",
        String::from_utf8_lossy(&heard)
    );
    let heard_text = String::from_utf8_lossy(&heard);
    assert!(
        heard_text.contains(&format!(
            "Bearer {}",
            conpaas_crds::code_api::node_log_key(&node.spec.token)
        )),
        "the controller showed the node's log key, and only to the certificate reported: {heard_text}"
    );
    assert!(
        read.stdout.contains("the tenant's own answer"),
        "what the tenant answers is shown as that node's log: {}",
        read.stdout
    );
    println!(
        "hostile tenant, logs: the tenant's TLS server heard {} bytes (decrypted), the node's log key and not the reader's token",
        heard.len()
    );
}

/// A metered tenant asks for an instance type its Cloud does not price (it would cost 1 credit
/// an hour, whatever it costs the provider): refused, naming the field, and no VM is made.
#[tokio::test(flavor = "multi_thread")]
async fn a_metered_tenant_gets_no_vm_of_a_type_its_cloud_does_not_price() {
    let env = env("hostile-prices-e2e", 143).await;
    // The tenant's account exists before its Services, as `cpsctl tenant create` makes it: a
    // namespace whose account the controller has not seen yet is not metered.
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: priced}\n\
         spec: {local: {}, prices: {small: 1, large: 4}}\n---\n\
         apiVersion: conpaas.io/v1alpha1\nkind: CreditAccount\nmetadata: {name: credits}\n\
         spec: {grant: 100}\n",
    )
    .await;
    let accounts: kube::Api<conpaas_crds::v1alpha1::CreditAccount> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    conpaas_e2e::wait::until("the controller keeps the account", LIMIT, || async {
        Ok(accounts.get("credits").await?.status.is_some())
    })
    .await
    .unwrap();
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: demo}\n\
         spec: {cloud: priced}\n---\n\
         apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: big}\n\
         spec: {application: demo, type: helloworld, roles: [{name: node, count: 1, instanceType: x1.32xlarge}]}\n",
    )
    .await;
    env.wait_service("big", "refused for its unpriced instance type", |s| {
        s.status.as_ref().is_some_and(|st| {
            conpaas_crds::v1alpha1::find_condition(&st.conditions, "Ready").is_some_and(|c| {
                c.reason == "InstanceTypeNotPriced"
                    && c.message
                        .contains("spec.roles[node].instanceType \"x1.32xlarge\"")
            })
        })
    })
    .await;
    assert!(env.nodes("big").await.is_empty(), "no node, so no VM");
    // A priced type runs.
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: big}\n\
         spec: {application: demo, type: helloworld, roles: [{name: node, count: 1, instanceType: large}]}\n",
    )
    .await;
    env.wait_ready("big", "node 1/1").await;
}

/// Two doors of the code path. An archive's digest is no key: tenant b writes tenant a's code
/// digest into a version of its own Service and reads nothing (the store serves an archive only
/// to the namespace it was stored for). And a git URL is no probe: one at a loopback address
/// the administrator did not allow, and one at the cloud metadata address, are refused before
/// any connection (a listener at the first sees none), and the Events say so.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_reads_nothing_through_a_learnt_digest_or_a_git_url() {
    use conpaas_crds::code_api::{archive_path, archives_path};

    let env = env("hostile-code-e2e", 145).await;
    env.apply_cloud_and_app().await;
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: gen}\n\
         spec: {application: demo, type: generic, state: Stopped, roles: [{name: master, count: 1}]}\n",
    )
    .await;
    env.wait_code_api().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("run.sh"), "echo tenant a's secret code\n").unwrap();
    let upload = [
        "-n",
        &env.ns,
        "code",
        "upload",
        "gen",
        work.path().to_str().unwrap(),
        "--version",
        "v1",
    ];
    upload_code(&env, &upload).await;
    let service = env.services().get("gen").await.unwrap();
    let sha = service.spec.code.unwrap().versions[0]
        .artifact
        .clone()
        .unwrap()
        .sha256;
    let (status, _) = api_get(&env.client, &archive_path(&env.ns, "gen", &sha)).await;
    assert_eq!(status, 200, "tenant a reads its own archive");
    let mut doors = 0;

    // Tenant b names that digest in a version of its own.
    run(
        &conpaas_e2e::tools::kubectl(),
        &["create", "namespace", OTHER],
        &env.cp.kubeconfig,
        None,
    )
    .unwrap();
    let thief = format!(
        "apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {{name: demo}}\nspec: {{cloud: local}}\n---\n\
         apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: thief}}\n\
         spec: {{application: demo, type: generic, state: Stopped, roles: [{{name: master, count: 1}}], \
         code: {{versions: [{{name: stolen, artifact: {{sha256: '{sha}'}}}}], active: stolen}}}}\n"
    );
    conpaas_e2e::manifest::apply(&env.client, &thief, OTHER)
        .await
        .unwrap();
    let (status, body) = api_get(&env.client, &archive_path(OTHER, "thief", &sha)).await;
    assert_eq!(status, 404, "tenant b read {} bytes", body.len());
    let (status, body) = api_get(&env.client, &archives_path(OTHER, "thief")).await;
    assert_eq!((status, body.as_slice()), (200, b"[]".as_slice()));
    doors += 1;

    // Git URLs at addresses that are not public.
    let listener = std::net::TcpListener::bind("127.0.77.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let probes = [
        ("loopback", format!("git://127.0.77.1:{port}/app.git")),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ),
    ];
    for (name, url) in &probes {
        env.apply(&format!(
            "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\n\
             spec: {{application: demo, type: generic, state: Stopped, roles: [{{name: master, count: 1}}], \
             code: {{git: {{url: '{url}', ref: main}}}}}}\n"
        ))
        .await;
    }
    for (name, kind) in [
        ("loopback", "a loopback address"),
        ("metadata", "a link-local"),
    ] {
        env.wait_event_where(&env.ns, "GitSyncFailed", |e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.note.as_deref().is_some_and(|n| {
                    n.contains("refused")
                        && n.contains(kind)
                        && n.contains("--git-allowed-networks")
                })
        })
        .await;
        let service = env.services().get(name).await.unwrap();
        assert!(service.spec.code.unwrap().versions.is_empty(), "{name}");
        doors += 1;
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the controller connected to a refused address"
    );
    println!("hostile tenant: {doors} code doors tried, none opened");
}

/// A tenant's startup script on a local VM looks for the platform's credentials: its
/// environment holds nothing of the controller's (no KUBECONFIG, no state folder, no cloud
/// keys), its home is the VM's own folder, and it runs inside the cgroup its instance type
/// sizes. A type the Cloud does not list gets no VM, and the node says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_startup_script_finds_no_platform_credential_and_runs_within_its_type() {
    let env = env("hostile-vm-e2e", 146).await;
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: sized}\n\
         spec: {local: {instanceTypes: {small: {cpus: 0.5, memoryMiB: 512}}}}\n---\n\
         apiVersion: conpaas.io/v1alpha1\nkind: Application\nmetadata: {name: demo}\n\
         spec: {cloud: sized}\n---\n\
         apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: snoop}\n\
         spec: {application: demo, type: generic, roles: [{name: master, count: 1, instanceType: small}]}\n",
    )
    .await;
    env.wait_code_api().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("init.sh"), "echo init\n").unwrap();
    std::fs::write(
        work.path().join("run.sh"),
        "env > ../../snooped.env\ncat /proc/self/cgroup > ../../snooped.cgroup\n\
         echo looked > ../../running.txt\nexec sleep 600\n",
    )
    .unwrap();
    let upload = [
        "-n",
        &env.ns,
        "code",
        "upload",
        "snoop",
        work.path().to_str().unwrap(),
        "--version",
        "v1",
        "--activate",
    ];
    upload_code(&env, &upload).await;
    wait::until("the node", LIMIT, || async {
        Ok(!env.nodes("snoop").await.is_empty())
    })
    .await
    .unwrap();
    let node = env.nodes("snoop").await.remove(0);
    wait_running(&env, &node, "looked").await;
    let vm = env.state.path().join("vms").join(&node.spec.token);
    let seen = std::fs::read_to_string(vm.join("work/snooped.env")).unwrap();
    for secret in [
        "KUBECONFIG",
        "CONPAAS_STATE_DIR",
        "CONPAAS_AGENT_BINARY",
        "AWS_",
    ] {
        assert!(!seen.contains(secret), "the script found {secret}:\n{seen}");
    }
    assert!(
        seen.lines().any(|l| l
            .strip_prefix("HOME=")
            .is_some_and(|home| home.starts_with(vm.to_str().unwrap()))),
        "{seen}"
    );
    let cgroups = std::fs::read_to_string(vm.join("work/snooped.cgroup")).unwrap();
    for controller in ["cpu", "memory"] {
        let line = format!(":{controller}:/conpaas-local/{}", node.spec.token);
        assert!(cgroups.contains(&line), "{line} in\n{cgroups}");
    }
    let quota = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/cpu/conpaas-local/{}/cpu.cfs_quota_us",
        node.spec.token
    ))
    .unwrap();
    assert_eq!(quota.trim(), "50000", "half of every 100 ms");

    // A type the Cloud does not list.
    env.apply(
        "apiVersion: conpaas.io/v1alpha1\nkind: Service\nmetadata: {name: big}\n\
         spec: {application: demo, type: helloworld, roles: [{name: node, count: 1, instanceType: huge}]}\n",
    )
    .await;
    wait::until("the unlisted type refused", LIMIT, || async {
        Ok(env.nodes("big").await.iter().any(|n| {
            n.status.as_ref().is_some_and(|s| {
                conpaas_crds::v1alpha1::find_condition(&s.conditions, "Ready").is_some_and(|c| {
                    c.reason == "ProviderUnsupported"
                        && c.message.contains("spec.local.instanceTypes")
                })
            })
        }))
    })
    .await
    .unwrap();
    assert!(
        env.nodes("big")
            .await
            .iter()
            .all(|n| n.status.as_ref().is_none_or(|s| s.provider_id.is_none())),
        "no VM for it"
    );
}
