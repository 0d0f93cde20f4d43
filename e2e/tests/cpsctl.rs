//! Every cpsctl verb against a real control plane and controller, each verb's effect checked on
//! the resources (or on what it printed, for the read-only ones).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use conpaas_crds::labels::ANNOTATION_DISPLAY_NAME;
use conpaas_crds::v1alpha1::{DesiredState, Phase, Service};
use conpaas_e2e::tools::{Ran, cpsctl, run};
use kube::ResourceExt;

const NS: &str = "cli";

fn cps(env: &common::Env, args: &[&str]) -> Ran {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    run(&cpsctl(), &all, &env.cp.kubeconfig, None).expect("cpsctl")
}

async fn service(env: &common::Env, name: &str) -> Service {
    env.services().get(name).await.expect("service")
}

/// Serves one file over HTTP on loopback, as ConPaaS manifests' Archive URLs pointed at.
fn serve_file(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/generic.tar", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 2048];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

/// A generic archive whose run.sh prints a line.
fn generic_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, body) in [
        ("init.sh", "#!/bin/sh\necho init\n"),
        ("run.sh", "#!/bin/sh\necho running as $MY_ROLE\n"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder
            .append_data(&mut header, name, body.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

#[tokio::test]
async fn every_verb_does_what_it_says() {
    let env = common::env(NS, 122).await;
    env.apply("apiVersion: conpaas.io/v1alpha1\nkind: Cloud\nmetadata: {name: local}\nspec: {local: {}}\n")
        .await;

    let clouds: kube::Api<conpaas_crds::v1alpha1::Cloud> = kube::Api::all(env.client.clone());
    conpaas_e2e::wait::until("the Cloud to be checked", common::LIMIT, || {
        let clouds = clouds.clone();
        async move {
            let st = clouds.get("local").await?.status.unwrap_or_default();
            Ok(conpaas_crds::v1alpha1::is_condition_true(
                &st.conditions,
                "Ready",
            ))
        }
    })
    .await
    .unwrap();

    // usage and doctor need no objects; doctor finds everything working (the code API too,
    // once the API server has found it).
    env.wait_code_api().await;
    let usage = cps(&env, &["usage", "generic"]).ok().stdout;
    assert!(
        usage.contains("master") && usage.contains("always exactly 1"),
        "{usage}"
    );
    let doctor = cps(&env, &["doctor"]).ok().stdout;
    for check in [
        "api-server",
        "crd services.conpaas.io",
        "controller",
        "cloud local",
        "code api",
    ] {
        assert!(
            doctor
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check}:\n{doctor}"
        );
    }
    let clouds = cps(&env, &["clouds"]).ok().stdout;
    assert!(
        clouds.contains("local") && clouds.contains("True"),
        "{clouds}"
    );

    // create: the Application is made on the only Cloud, the Service named after its type.
    cps(
        &env,
        &["create", "helloworld", "--app", "demo", "--node", "2"],
    )
    .ok();
    let hello = service(&env, "helloworld").await;
    assert_eq!(hello.spec.replicas, Some(2));
    cps(&env, &["wait", "helloworld", "--timeout", "2m"]).ok();
    assert_eq!(env.nodes("helloworld").await.len(), 2);

    // list and describe show it, with nodes, addresses and credits.
    let list = cps(&env, &["list"]).ok().stdout;
    assert!(
        list.contains("helloworld") && list.contains("RUNNING") && list.contains("node 2/2"),
        "{list}"
    );
    let tree = cps(&env, &["describe", "--app", "demo"]).ok().stdout;
    assert!(tree.starts_with("Application demo  cloud local"), "{tree}");
    assert!(tree.contains("Ready=True Running"), "{tree}");
    assert_eq!(tree.matches("VM Running  agent Ready").count(), 2, "{tree}");
    assert!(
        tree.contains("credits 2"),
        "two nodes, each in its first hour:\n{tree}"
    );
    let as_yaml = cps(&env, &["describe", "helloworld", "-o", "yaml"])
        .ok()
        .stdout;
    let parsed: serde_json::Value = serde_yaml::from_str(&as_yaml).unwrap();
    assert_eq!(parsed["nodes"].as_array().unwrap().len(), 2);

    // add-nodes, remove-nodes, scale: counts change where they live.
    cps(&env, &["add-nodes", "helloworld", "--node", "2"]).ok();
    assert_eq!(service(&env, "helloworld").await.spec.replicas, Some(4));
    let refused = cps(&env, &["remove-nodes", "helloworld", "--node", "9"]);
    assert!(
        refused.stderr.contains("cannot remove 9"),
        "{}",
        refused.stderr
    );
    let unknown = cps(&env, &["add-nodes", "helloworld", "--web", "1"]);
    assert!(unknown.stderr.contains("--node N"), "{}", unknown.stderr);
    cps(&env, &["remove-nodes", "helloworld", "--node", "3"]).ok();
    assert_eq!(service(&env, "helloworld").await.spec.replicas, Some(1));
    cps(&env, &["scale", "helloworld", "3"]).ok();
    assert_eq!(service(&env, "helloworld").await.spec.replicas, Some(3));

    // plan: reads only, and says what the controller will do.
    let plan: serde_json::Value =
        serde_json::from_str(&cps(&env, &["-o", "json", "plan", "helloworld"]).ok().stdout)
            .unwrap();
    let role = &plan["roles"][0];
    assert_eq!(
        (role["role"].as_str(), role["desired"].as_i64()),
        (Some("node"), Some(3)),
        "{plan}"
    );
    let creates = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "create")
        .count() as i64;
    assert_eq!(
        role["current"].as_i64().unwrap() + creates,
        3,
        "the plan creates what is missing: {plan}"
    );
    cps(&env, &["wait", "helloworld"]).ok();
    let settled = cps(&env, &["plan", "helloworld"]).ok().stdout;
    assert!(settled.contains("no changes"), "{settled}");
    assert_eq!(env.nodes("helloworld").await.len(), 3);

    // logs: each node's agent log, and the controller's Events.
    let logs = cps(&env, &["logs", "helloworld", "--tail", "50"])
        .ok()
        .stdout;
    assert_eq!(logs.matches("==> helloworld-node-").count(), 3, "{logs}");
    assert!(logs.contains("agent starting"), "{logs}");
    let events = cps(&env, &["logs", "helloworld", "--controller"])
        .ok()
        .stdout;
    assert!(events.contains("VmCreated"), "{events}");

    // rename and startup-script.
    cps(&env, &["rename", "helloworld", "Front page"]).ok();
    let renamed = service(&env, "helloworld").await;
    assert_eq!(
        renamed
            .annotations()
            .get(ANNOTATION_DISPLAY_NAME)
            .map(String::as_str),
        Some("Front page")
    );
    let script = env.state.path().join("setup.sh");
    std::fs::write(&script, "#!/bin/sh\necho set up\n").unwrap();
    cps(
        &env,
        &["startup-script", "helloworld", script.to_str().unwrap()],
    )
    .ok();
    assert_eq!(
        service(&env, "helloworld")
            .await
            .spec
            .startup_script
            .as_deref(),
        Some("#!/bin/sh\necho set up\n")
    );

    // stop and start.
    cps(&env, &["stop", "helloworld"]).ok();
    assert_eq!(
        service(&env, "helloworld").await.spec.state,
        DesiredState::Stopped
    );
    cps(&env, &["wait", "helloworld", "--for", "stopped"]).ok();
    assert!(env.nodes("helloworld").await.is_empty());
    cps(&env, &["start", "helloworld"]).ok();
    cps(&env, &["wait", "helloworld"]).ok();
    assert_eq!(
        service(&env, "helloworld").await.status.unwrap().phase,
        Phase::Running
    );

    // import a ConPaaS manifest (a generic service with an Archive from a URL), export it back.
    let url = serve_file(generic_archive());
    let manifest = serde_json::json!({
        "Application": "Batch Jobs",
        "Description": "workers",
        "Services": [{"ServiceName": "workers", "Type": "generic", "StartupInstances": {"master": 1, "node": 2}, "Archive": url, "StartRole": "master"}]
    });
    let file = env.state.path().join("batch.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let imported = cps(&env, &["import", file.to_str().unwrap()]).ok();
    assert!(
        imported
            .stderr
            .contains("Services[0].StartRole: not acted on"),
        "{}",
        imported.stderr
    );
    cps(&env, &["wait", "workers", "--timeout", "2m"]).ok();
    let workers = service(&env, "workers").await;
    assert_eq!(workers.spec.application, "batch-jobs");
    assert_eq!(
        workers.status.unwrap().active_code_version.as_deref(),
        Some("v1")
    );
    let exported = cps(&env, &["export", "batch-jobs"]).ok().stdout;
    let exported: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(exported, manifest, "the round trip keeps every field");
    let script_log = cps(
        &env,
        &["logs", "workers", "--role", "node", "--file", "run.sh.log"],
    )
    .ok()
    .stdout;
    assert!(script_log.contains("running as node"), "{script_log}");

    // A manifest with types this ConPaaS does not run yet applies nothing and says so.
    let grid = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        grid.path(),
        r#"{"Application": "grid", "Services": [{"Type": "php"}, {"Type": "selenium"}]}"#,
    )
    .unwrap();
    let before = env
        .services()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    let refused = cps(&env, &["import", grid.path().to_str().unwrap()]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused
            .stderr
            .contains("Services[1].Type selenium: not a type this ConPaaS runs yet"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        env.services()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        before,
        "nothing was applied"
    );

    // terminate: the Service and its VMs go.
    cps(&env, &["terminate", "helloworld", "--wait"]).ok();
    assert!(
        env.services()
            .get_opt("helloworld")
            .await
            .unwrap()
            .is_none()
    );
    assert!(env.nodes("helloworld").await.is_empty());
}

#[test]
fn completion_and_help_work_offline() {
    let nowhere = std::path::Path::new("/nonexistent/kubeconfig");
    let bash = run(&cpsctl(), &["completion", "bash"], nowhere, None)
        .unwrap()
        .ok()
        .stdout;
    assert!(bash.contains("add-nodes"), "completion lists the verbs");
    let help = run(&cpsctl(), &["add-nodes", "--help"], nowhere, None)
        .unwrap()
        .ok()
        .stdout;
    assert!(help.contains("Example"), "{help}");
    let plugin = cpsctl().with_file_name("kubectl-conpaas");
    let usage = run(&plugin, &["usage", "helloworld"], nowhere, None)
        .unwrap()
        .ok()
        .stdout;
    assert!(usage.contains("greeting"), "{usage}");
    let lost = run(&cpsctl(), &["list"], nowhere, None).unwrap();
    assert_ne!(lost.code, Some(0));
    assert!(
        lost.stderr.contains("KUBECONFIG"),
        "says what to do: {}",
        lost.stderr
    );
}
