//! The filesystem service (ConPaaS' XtreemFS) on real GlusterFS daemons: a replica-2 volume on 3
//! storage nodes, mounted through a link by a generic Service; files written through that mount
//! keep their checksums while the storage scales 3 -> 4 -> 2 (data moved off the leaving nodes
//! first), a scale-in below the volume's replicas is refused, and a Stop/Start keeps the data.
//! A volume holding only a 200 MiB file of zeros (its archive is a thousandth of it, past any
//! unpacking ratio a code archive may have) comes back whole after a Stop/Start and after a Stop
//! made while the save was still being put back. Storage agents killed in turn (the new agent
//! takes the node's glusterd over), one frozen past three heartbeat timeouts and a move to a
//! larger instance type lose no file the app wrote meanwhile. A Stop whose save the store
//! refuses keeps the nodes and every file until the store takes it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use conpaas_e2e::wait;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};

fn filesystem(storage: i32, state: &str) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "fs"},
        "spec": {
            "application": "demo", "type": "filesystem", "state": state,
            "replicas": storage,
            // Each storage node keeps its bricks on a data volume of its own.
            "roles": [{"name": "storage", "volume": {"sizeGiB": 1}}],
            // Bricks share this machine's disk, whichever share of it is free.
            "settings": {"min_free_disk_percent": "0"},
            "filesystem": {"volumes": [{"name": "data", "replicas": 2}]}
        }
    })
}

fn app() -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "app"},
        "spec": {
            "application": "demo", "type": "generic",
            "links": [{"service": "fs", "volume": "data", "mountPath": "shared/data"}],
            "code": {"active": "v1", "versions": [{"name": "v1", "configMap": {"name": "app-code", "key": "code.tar"}}]}
        }
    })
}

async fn apply(env: &Env, service: serde_json::Value) -> Result<(), kube::Error> {
    let name = service["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch(&name, &pp, &Patch::Apply(service))
        .await
        .map(|_| ())
}

fn work_dir(env: &Env, token: &str) -> PathBuf {
    env.state.path().join("vms").join(token).join("work")
}

/// Files of several sizes with contents only this run writes.
fn contents(n: usize) -> BTreeMap<String, Vec<u8>> {
    let seed = std::process::id() as u64;
    (0..n)
        .map(|i| {
            let size = [0usize, 1, 4096, 65_537, 1 << 20][i % 5];
            let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let bytes = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            (format!("dir{}/file-{i}.bin", i % 7), bytes)
        })
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every file's checksum as read through `mount`; names what differs or is missing.
fn check_files(mount: &Path, expected: &BTreeMap<String, String>) -> Result<(), String> {
    let mut wrong = Vec::new();
    for (name, digest) in expected {
        match std::fs::read(mount.join(name)) {
            Ok(bytes) if &sha(&bytes) == digest => {}
            Ok(_) => wrong.push(format!("{name}: other contents")),
            Err(e) => wrong.push(format!("{name}: {e}")),
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} files: {:?}",
            wrong.len(),
            expected.len(),
            &wrong[..wrong.len().min(5)]
        ))
    }
}

/// How many bricks of the storage nodes hold a copy of `file`.
fn copies(env: &Env, tokens: &[String], file: &str) -> usize {
    tokens
        .iter()
        .flat_map(|t| {
            std::fs::read_dir(work_dir(env, t).join("glusterfs/bricks"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter(|brick| {
            // A moved file leaves a zero-length pointer with the sticky bit behind for a moment.
            std::fs::metadata(brick.path().join(file)).is_ok_and(|m| m.is_file() && m.len() > 0)
        })
        .count()
}

async fn storage_tokens(env: &Env) -> Vec<String> {
    env.nodes("fs")
        .await
        .into_iter()
        .map(|n| n.spec.token)
        .collect()
}

/// What the storage nodes' agents say, and their drains.
async fn agents(env: &Env) -> Vec<(Option<String>, Option<String>, Option<Vec<String>>, bool)> {
    env.nodes("fs")
        .await
        .into_iter()
        .map(|n| {
            let agent = n.status.and_then(|s| s.agent).unwrap_or_default();
            (
                n.metadata.name,
                agent.message,
                agent.routes_to,
                n.spec.drain.is_some(),
            )
        })
        .collect()
}

/// Waits until every storage node reports `holders` nodes holding bricks.
async fn wait_bricks_on(env: &Env, holders: usize) {
    let result = wait::until(
        &format!("bricks on {holders} storage nodes"),
        LIMIT,
        || async {
            let nodes = env.nodes("fs").await;
            Ok(!nodes.is_empty()
                && nodes.iter().all(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.agent.as_ref())
                        .and_then(|a| a.routes_to.as_ref())
                        .is_some_and(|r| r.len() == holders)
                }))
        },
    )
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n--- agents ---\n{:#?}", agents(env).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_keep_their_checksums_through_scaling_and_a_stop() {
    let env = env("filesystem-e2e", 56).await;
    env.apply_cloud_and_app().await;
    let code = tar_of(
        &[
            (
                "init.sh",
                "echo \"$FS_MOUNT $FS_VOLUME $FS_SERVERS\" > ../../link.txt\n",
            ),
            ("run.sh", "exec sleep 3600\n"),
        ],
        0o755,
    );
    create_config_map(&env, "app-code", "code.tar", code).await;
    apply(&env, filesystem(3, "Running")).await.unwrap();
    apply(&env, app()).await.unwrap();
    env.wait_ready("fs", "storage 3/3").await;
    env.wait_ready("app", "master 1/1, node 0/0").await;

    // The link: the volume is mounted on the generic node and linked into its code folder.
    let app_node = env.nodes("app").await.remove(0);
    let app_work = work_dir(&env, &app_node.spec.token);
    let link = std::fs::read_to_string(app_work.join("link.txt")).unwrap();
    let mount = PathBuf::from(link.split_whitespace().next().unwrap());
    assert!(link.contains(" data "), "the link's environment: {link}");
    assert!(
        conpaas_e2e_mounts().contains(&mount.canonicalize().unwrap()),
        "{} is a mount",
        mount.display()
    );
    let code_dirs: Vec<PathBuf> = std::fs::read_dir(app_work.join("code"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("init.sh").exists())
        .collect();
    assert_eq!(
        std::fs::read_link(code_dirs[0].join("shared/data")).unwrap(),
        mount,
        "the volume appears at the link's mountPath in the code folder"
    );

    // Files written through the mount land on two bricks each.
    let files = contents(60);
    for (name, bytes) in &files {
        let path = mount.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let expected: BTreeMap<String, String> =
        files.iter().map(|(n, b)| (n.clone(), sha(b))).collect();
    check_files(&mount, &expected).unwrap();
    let tokens = storage_tokens(&env).await;
    for name in files.keys().filter(|n| !files[*n].is_empty()) {
        assert_eq!(copies(&env, &tokens, name), 2, "{name} has two copies");
    }
    for token in &tokens {
        let vm = env.state.path().join("vms").join(token);
        assert_eq!(std::fs::read_to_string(vm.join("volume-gib")).unwrap(), "1");
        assert_eq!(
            std::fs::read_link(vm.join("work/glusterfs/bricks")).unwrap(),
            vm.join("work/volume/bricks"),
            "the bricks are on the node's data volume"
        );
    }
    wait_bricks_on(&env, 2).await;

    // 3 -> 4: the third and fourth node form a second group, and new files spread over both.
    apply(&env, filesystem(4, "Running")).await.unwrap();
    env.wait_ready("fs", "storage 4/4").await;
    wait_bricks_on(&env, 4).await;
    check_files(&mount, &expected).unwrap();
    let more: BTreeMap<String, Vec<u8>> = contents(120)
        .into_iter()
        .skip(60)
        .map(|(n, b)| (format!("more/{n}"), b))
        .collect();
    for (name, bytes) in &more {
        let path = mount.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let mut expected = expected;
    expected.extend(more.iter().map(|(n, b)| (n.clone(), sha(b))));
    check_files(&mount, &expected).unwrap();
    // Some of them are on the new nodes, which a scale back to 2 must move off.
    let new_nodes: Vec<String> = env
        .nodes("fs")
        .await
        .into_iter()
        .filter(|n| {
            n.metadata
                .name
                .as_deref()
                .is_some_and(|m| m.ends_with("-2") || m.ends_with("-3"))
        })
        .map(|n| n.spec.token)
        .collect();
    let on_new = more
        .keys()
        .filter(|n| !more[*n].is_empty() && copies(&env, &new_nodes, n) == 2)
        .count();
    assert!(on_new > 0, "no new file landed on the new group");
    println!("{on_new} of {} new files on the new group", more.len());

    // A volume's layout cannot change under it.
    let mut wider = filesystem(4, "Running");
    wider["spec"]["filesystem"]["volumes"][0]["replicas"] = json!(3);
    let refused = apply(&env, wider).await.unwrap_err().to_string();
    assert!(refused.contains("cannot change"), "{refused}");

    // Below the volume's replicas: refused by the API server, naming the volume.
    let refused = apply(&env, filesystem(1, "Running")).await.unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("fewer storage nodes than a volume"),
        "{message}"
    );

    // 4 -> 2: the second group's data moves onto the first before those nodes go.
    let started = Instant::now();
    apply(&env, filesystem(2, "Running")).await.unwrap();
    let result = wait::until("2 storage nodes", Duration::from_secs(300), || async {
        Ok(env.nodes("fs").await.len() == 2)
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n--- agents ---\n{:#?}", agents(&env).await);
    }
    println!(
        "4 -> 2 storage nodes with {} files of {} bytes: {:.1}s",
        expected.len(),
        files
            .values()
            .chain(more.values())
            .map(Vec::len)
            .sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    env.wait_ready("fs", "storage 2/2").await;
    check_files(&mount, &expected).unwrap();
    let tokens = storage_tokens(&env).await;
    for name in files.keys().filter(|n| !files[*n].is_empty()) {
        assert_eq!(
            copies(&env, &tokens, name),
            2,
            "{name} still has two copies"
        );
    }
    for name in more.keys().filter(|n| !more[*n].is_empty()) {
        assert_eq!(
            copies(&env, &tokens, name),
            2,
            "{name} moved with two copies"
        );
    }

    // Stop while the app goes on writing: the volume is archived, and no write is acknowledged
    // after that (the volume turns read-only first); Start: it comes back on new nodes, and the
    // linked node's mount follows them.
    let writer = FileWriter::start(&mount);
    stop(&env).await;
    let late = writer.finish();
    println!("{} files written during the stop", late.len());
    assert!(!late.is_empty(), "the app wrote until the fence");
    expected.extend(late);
    start(&env).await;
    let result = wait::until("the files back through the app's mount", LIMIT, || async {
        Ok(check_files(&mount, &expected).is_ok())
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}: {}", check_files(&mount, &expected).unwrap_err());
    }

    // cpsctl fs export: the volume as a tar; cpsctl fs import: a tar into it.
    let exported = cpsctl_bytes(&env, &["fs", "export", "fs", "data"]);
    let mut in_tar = BTreeMap::new();
    for entry in tar::Archive::new(exported.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let name = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            in_tar.insert(name, sha(&bytes));
        }
    }
    // A write the fence refused may leave its file behind, never acknowledged.
    in_tar.retain(|name, _| expected.contains_key(name) || !name.starts_with("late/"));
    assert_eq!(in_tar, expected, "the export holds every file, unchanged");
    let import = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        import.path(),
        tar_of(&[("imported/hello.txt", "from a tar\n")], 0o644),
    )
    .unwrap();
    cpsctl_bytes(
        &env,
        &[
            "fs",
            "import",
            "fs",
            "data",
            import.path().to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(mount.join("imported/hello.txt")).unwrap(),
        "from a tar\n",
        "the imported file, through the app's mount"
    );
    let refused = cpsctl_run(&env, &["fs", "export", "fs", "nope"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("has no volume \"nope\" (it has: data)"),
        "{said}"
    );

    delete_and_expect_nothing_running(&env, &["app", "fs"]).await;
    assert!(
        !conpaas_e2e_mounts()
            .iter()
            .any(|m| m.starts_with(env.state.path())),
        "a volume is still mounted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_save_larger_than_one_request_and_a_thousandfold_compressible_file_come_back() {
    // Requests end after 2 s here (60 s by default): a save that must cross in one request
    // cannot, as one of tens of GiB could not at the default.
    let timeout = ["--request-timeout=2s".to_string()];
    let env = env_with_apiserver("filesystem-big-e2e", 137, &[], &timeout).await;
    env.apply_cloud_and_app().await;
    apply(&env, filesystem(2, "Running")).await.unwrap();
    env.wait_ready("fs", "storage 2/2").await;
    const SIZE: u64 = 200 << 20;
    let import = tempfile::NamedTempFile::new().unwrap();
    let mut builder = tar::Builder::new(std::fs::File::create(import.path()).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(SIZE);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(
            &mut header,
            "zeros.bin",
            std::io::Read::take(std::io::repeat(0), SIZE),
        )
        .unwrap();
    // Incompressible: the save is about as large as the file.
    const RANDOM: u64 = 320 << 20;
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut noise = vec![0; RANDOM as usize];
    std::io::Read::read_exact(&mut random, &mut noise).unwrap();
    header.set_size(RANDOM);
    header.set_cksum();
    builder
        .append_data(&mut header, "random.bin", noise.as_slice())
        .unwrap();
    let noise_sha = hex::encode(Sha256::digest(&noise));
    drop(noise);
    builder.finish().unwrap();
    drop(builder);
    cpsctl_bytes(
        &env,
        &[
            "fs",
            "import",
            "fs",
            "data",
            import.path().to_str().unwrap(),
        ],
    );

    // Stopped and started, and stopped again while the manager still puts the save back (the
    // Stop waits for it: a save of part of it would replace the whole); started.
    let started = Instant::now();
    stop(&env).await;
    apply(&env, filesystem(2, "Running")).await.unwrap();
    env.wait_agent_saying("the manager putting the save back", |m| {
        m.contains("putting the data saved at the last stop back")
    })
    .await;
    stop_then_start(&env).await;
    println!(
        "filesystem, 2 storage nodes, 520 MiB: a Stop, a Start, a Stop during the restore, then a Start: {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let exported = exported_volume(&env).await;
    let (mut zeros, mut noise) = (None, None);
    for entry in tar::Archive::new(exported.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        if entry.path().unwrap().ends_with("zeros.bin") {
            zeros = Some((bytes.len() as u64, bytes.iter().all(|b| *b == 0)));
        } else if entry.path().unwrap().ends_with("random.bin") {
            noise = Some(hex::encode(Sha256::digest(&bytes)));
        }
    }
    assert_eq!(
        zeros,
        Some((SIZE, true)),
        "the 200 MiB of zeros came back whole"
    );
    assert_eq!(
        noise,
        Some(noise_sha),
        "the 320 MiB of random bytes came back whole"
    );
    // Once put back, no node keeps an unpacked copy beside its brick.
    for token in storage_tokens(&env).await {
        let left: Vec<_> = std::fs::read_dir(work_dir(&env, &token).join("glusterfs/restore"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|saved| saved.path().join("files").exists())
            .map(|saved| saved.path())
            .collect();
        assert!(left.is_empty(), "unpacked copies left: {left:?}");
    }
    delete_and_expect_nothing_running(&env, &["fs"]).await;
}

/// Storage node 0 (the pool's manager) powered off while the app writes: its replacement joins
/// the pool through a node of it (not a pool of its own), takes the departed node's place in its
/// group and heals from the other copy; then a volume size and instance type change moves both
/// nodes one at a time the same way. Every acknowledged file is there with two copies at the end of each.
#[tokio::test(flavor = "multi_thread")]
async fn a_powered_off_manager_and_a_volume_change_are_replaced_node_by_node_without_a_file_lost() {
    let env = env("filesystem-replace-e2e", 138).await;
    env.apply_cloud_and_app().await;
    let code = tar_of(
        &[
            ("init.sh", "echo \"$FS_MOUNT\" > ../../link.txt\n"),
            ("run.sh", "exec sleep 3600\n"),
        ],
        0o755,
    );
    create_config_map(&env, "app-code", "code.tar", code).await;
    // A failed VM counts after a heartbeat timeout (it may come back with its disk).
    let mut service = filesystem(2, "Running");
    service["spec"]["health"] = json!({"heartbeatTimeoutSeconds": 10});
    apply(&env, service.clone()).await.unwrap();
    apply(&env, app()).await.unwrap();
    env.wait_ready("fs", "storage 2/2").await;
    env.wait_ready("app", "master 1/1, node 0/0").await;
    let app_node = env.nodes("app").await.remove(0);
    let link =
        std::fs::read_to_string(work_dir(&env, &app_node.spec.token).join("link.txt")).unwrap();
    let mount = PathBuf::from(link.trim());
    let files = contents(40);
    for (name, bytes) in &files {
        let path = mount.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let mut expected: BTreeMap<String, String> =
        files.iter().map(|(n, b)| (n.clone(), sha(b))).collect();
    wait_bricks_on(&env, 2).await;

    // Both copies are whole again, on the nodes there are now, and every file reads back.
    let whole_again = |expected: BTreeMap<String, String>, what: &'static str| {
        let (env, mount) = (&env, mount.clone());
        async move {
            let result = wait::until(what, Duration::from_secs(300), || async {
                let tokens = storage_tokens(env).await;
                Ok(tokens.len() == 2
                    && check_files(&mount, &expected).is_ok()
                    && expected
                        .keys()
                        .filter(|n| expected[*n] != sha(&[]))
                        .all(|n| copies(env, &tokens, n) == 2))
            })
            .await;
            if let Err(e) = result {
                panic!(
                    "{e:#}: {:?}\n--- agents ---\n{:#?}\n{}",
                    check_files(&mount, &expected),
                    agents(env).await,
                    env.agent_logs("fs", 30).await
                );
            }
        }
    };

    // The manager's VM goes off: its node is replaced (the other node has a copy of each file).
    let first = env
        .nodes("fs")
        .await
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("fs-storage-0"))
        .unwrap();
    let writer = FileWriter::start(&mount);
    let started = Instant::now();
    env.controller
        .local_cloud()
        .power_off(&first.spec.token)
        .await
        .unwrap();
    if let Err(e) = env.wait_replaced("fs", &first, 2).await {
        let conditions: Vec<_> = env
            .nodes("fs")
            .await
            .into_iter()
            .map(|n| (n.metadata.name, n.status.map(|s| s.conditions)))
            .collect();
        panic!(
            "{e:#}\n--- agents ---\n{:#?}\n--- nodes ---\n{conditions:#?}\n--- service ---\n{:#?}\n--- controller ---\n{}\n{}",
            agents(&env).await,
            env.services().get("fs").await.unwrap().status,
            env.controller.log(),
            env.agent_logs("fs", 30).await
        );
    }
    env.wait_ready("fs", "storage 2/2").await;
    let late = writer.finish();
    assert!(
        !late.is_empty(),
        "the app wrote while the node was replaced"
    );
    expected.extend(late);
    whole_again(expected.clone(), "two whole copies after the replacement").await;
    println!(
        "storage node 0 powered off -> replaced and healed with {} files: {:.1}s",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    // No node keeps a pool of its own: both report the two nodes holding bricks, and the
    // departed one no longer (its heal is done).
    wait_bricks_on(&env, 2).await;

    // A bigger data volume and a larger instance type for each node: one node at a time joins,
    // takes a brick and heals before an old one goes.
    let mut bigger = service;
    bigger["spec"]["roles"][0]["volume"]["sizeGiB"] = json!(2);
    bigger["spec"]["roles"][0]["instanceType"] = json!("large");
    let writer = FileWriter::start(&mount);
    let started = Instant::now();
    apply(&env, bigger).await.unwrap();
    // Each move heals a whole copy (the files written so far) before the next.
    let result = wait::until(
        "every storage node on a 2 GiB volume of a large VM",
        Duration::from_secs(400),
        || async {
            let nodes = env.nodes("fs").await;
            Ok(nodes.len() == 2
                && nodes.iter().all(|n| {
                    n.spec.instance_type.as_deref() == Some("large")
                        && std::fs::read_to_string(
                            env.state
                                .path()
                                .join("vms")
                                .join(&n.spec.token)
                                .join("volume-gib"),
                        )
                        .is_ok_and(|g| g == "2")
                }))
        },
    )
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n--- agents ---\n{:#?}", agents(&env).await);
    }
    env.wait_ready("fs", "storage 2/2").await;
    let late = writer.finish();
    assert!(!late.is_empty(), "the app wrote while the nodes moved");
    expected.extend(late);
    whole_again(expected.clone(), "two whole copies on the new volumes").await;
    println!(
        "volume 1 -> 2 GiB and instance type -> large on 2 storage nodes with {} files: {:.1}s",
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    delete_and_expect_nothing_running(&env, &["app", "fs"]).await;
}

/// The agents alone fail while the app writes: each storage node's agent is killed in turn
/// (glusterd and the bricks run on, and the VM's init starts a new agent, which takes them
/// over), then node 0's agent is frozen past three heartbeat timeouts and thawed. Every
/// acknowledged file is there with two copies after each.
#[tokio::test(flavor = "multi_thread")]
async fn storage_agents_killed_or_frozen_lose_no_acknowledged_file() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let env = env("filesystem-agents-e2e", 147).await;
    env.apply_cloud_and_app().await;
    let code = tar_of(
        &[
            ("init.sh", "echo \"$FS_MOUNT\" > ../../link.txt\n"),
            ("run.sh", "exec sleep 3600\n"),
        ],
        0o755,
    );
    create_config_map(&env, "app-code", "code.tar", code).await;
    let mut service = filesystem(2, "Running");
    service["spec"]["health"] = json!({"heartbeatTimeoutSeconds": 10});
    apply(&env, service).await.unwrap();
    apply(&env, app()).await.unwrap();
    env.wait_ready("fs", "storage 2/2").await;
    env.wait_ready("app", "master 1/1, node 0/0").await;
    let app_node = env.nodes("app").await.remove(0);
    let link =
        std::fs::read_to_string(work_dir(&env, &app_node.spec.token).join("link.txt")).unwrap();
    let mount = PathBuf::from(link.trim());
    let files = contents(30);
    for (name, bytes) in &files {
        let path = mount.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let mut expected: BTreeMap<String, String> =
        files.iter().map(|(n, b)| (n.clone(), sha(b))).collect();
    wait_bricks_on(&env, 2).await;

    // The node's glusterd: its command line names the VM's folder.
    let glusterd_of = |token: &str| {
        conpaas_cloud::local::find_by_cmdline("/usr/sbin/glusterd")
            .into_iter()
            .map(|(pid, _)| pid)
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(token))
            })
    };

    let writer = FileWriter::start(&mount);
    let started = Instant::now();
    let cloud = env.controller.local_cloud();
    for node in env.nodes("fs").await {
        let token = node.spec.token.clone();
        let glusterd = glusterd_of(&token).expect("the node's glusterd");
        cloud.restart_agent(&token).await.unwrap();
        // The new agent takes the node over: the old agent's glusterd goes and its own serves.
        let took_over = wait::until("the new agent's glusterd", LIMIT, || async {
            Ok(!alive(glusterd) && glusterd_of(&token).is_some_and(|pid| pid != glusterd))
        })
        .await;
        if let Err(e) = took_over {
            panic!("{e:#}\n{}", env.agent_logs("fs", 30).await);
        }
        env.wait_ready("fs", "storage 2/2").await;
        wait_bricks_on(&env, 2).await;
    }
    let restarted = started.elapsed();

    // Node 0's agent frozen for three heartbeat timeouts and more: its bricks serve on (or,
    // were it replaced, the other copy does and the new node heals from it).
    let first = env
        .nodes("fs")
        .await
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some("fs-storage-0"))
        .unwrap();
    let frozen = env.agent_of(&first.spec.token).expect("node 0's agent");
    kill(Pid::from_raw(frozen), Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(35)).await;
    let _ = kill(Pid::from_raw(frozen), Signal::SIGCONT);
    env.wait_ready("fs", "storage 2/2").await;
    wait_bricks_on(&env, 2).await;

    let late = writer.finish();
    assert!(!late.is_empty(), "the app wrote through the faults");
    expected.extend(late);
    let result = wait::until(
        "two whole copies of every file",
        Duration::from_secs(300),
        || async {
            let tokens = storage_tokens(&env).await;
            Ok(tokens.len() == 2
                && check_files(&mount, &expected).is_ok()
                && expected
                    .keys()
                    .filter(|n| expected[*n] != sha(&[]))
                    .all(|n| copies(&env, &tokens, n) == 2))
        },
    )
    .await;
    if let Err(e) = result {
        panic!(
            "{e:#}: {:?}\n--- agents ---\n{:#?}\n{}",
            check_files(&mount, &expected),
            agents(&env).await,
            env.agent_logs("fs", 30).await
        );
    }
    let replaced = env
        .nodes("fs")
        .await
        .iter()
        .all(|n| n.metadata.uid != first.metadata.uid);
    println!(
        "2 storage agents killed in turn: {:.1}s; node 0's agent frozen 35s ({}): {} files, every one with two copies",
        restarted.as_secs_f64(),
        if replaced { "replaced" } else { "kept" },
        expected.len()
    );
    delete_and_expect_nothing_running(&env, &["app", "fs"]).await;
}

/// Volume `data` of Service `fs` as `cpsctl fs export` gives it (a tar). The first mounts
/// after a start may come before the bricks listen: tried until one works.
async fn exported_volume(env: &Env) -> Vec<u8> {
    let mut exported = Vec::new();
    wait::until("an export of the volume", LIMIT, || {
        let out = cpsctl_run(env, &["fs", "export", "fs", "data"]);
        let done = if out.status.success() {
            exported = out.stdout;
            Ok(true)
        } else {
            Err(anyhow::anyhow!("{}", String::from_utf8_lossy(&out.stderr)))
        };
        async move { done }
    })
    .await
    .unwrap();
    exported
}

/// Stops Service `fs` (its volumes archived) and starts it again on 2 new storage nodes.
async fn stop_then_start(env: &Env) {
    stop(env).await;
    start(env).await;
}

/// A Stop whose save the artifact store refuses (it takes no archive over 64 bytes): the
/// Service says so (`SaveFailed`, with the store's answer) and keeps its storage nodes and
/// their bricks; once the store takes archives again the save is stored, the nodes go, and
/// Start brings every file back.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_whose_save_the_store_refuses_keeps_the_nodes_and_every_file() {
    let mut env = env_with(
        "filesystem-refused-e2e",
        152,
        &[("CONPAAS_MAX_ARCHIVE_BYTES", "64")],
    )
    .await;
    env.apply_cloud_and_app().await;
    apply(&env, filesystem(2, "Running")).await.unwrap();
    env.wait_ready("fs", "storage 2/2").await;
    let files = contents(20);
    let import = tempfile::NamedTempFile::new().unwrap();
    let mut builder = tar::Builder::new(std::fs::File::create(import.path()).unwrap());
    for (name, bytes) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
    drop(builder);
    let path = import.path().to_str().unwrap();
    cpsctl_bytes(&env, &["fs", "import", "fs", "data", path]);
    let mut before: Vec<_> = env
        .nodes("fs")
        .await
        .into_iter()
        .map(|n| n.metadata.uid)
        .collect();
    before.sort();

    apply(&env, filesystem(2, "Stopped")).await.unwrap();
    let save_failed = |s: &conpaas_crds::v1alpha1::Service| {
        let (reason, message) = degraded(s);
        reason == "SaveFailed" && message.contains("413")
    };
    env.wait_service("fs", "SaveFailed with the store's refusal", save_failed)
        .await;
    let kept = env.nodes("fs").await;
    let mut after: Vec<_> = kept.iter().map(|n| n.metadata.uid.clone()).collect();
    after.sort();
    assert_eq!(after, before, "every storage node is kept");
    assert!(kept.iter().all(|n| n.metadata.deletion_timestamp.is_none()));
    let service = env.services().get("fs").await.unwrap();
    assert!(
        service.status.and_then(|s| s.saved_data).is_none(),
        "nothing saved"
    );

    // The store takes archives again: the next try is stored, then the nodes go.
    env.controller.kill();
    env.controller
        .set_env("CONPAAS_MAX_ARCHIVE_BYTES", &(1u64 << 30).to_string());
    env.controller.restart().unwrap();
    env.wait_service("fs", "stopped with its data saved", |s| {
        s.status.as_ref().is_some_and(|st| st.saved_data.is_some()) && !save_failed(s)
    })
    .await;
    wait::until("no storage node left", LIMIT, || async {
        Ok(env.nodes("fs").await.is_empty())
    })
    .await
    .unwrap();
    start(&env).await;

    let exported = exported_volume(&env).await;
    let mut back = BTreeMap::new();
    for entry in tar::Archive::new(exported.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        back.insert(name, sha(&bytes));
    }
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|(name, bytes)| (name.clone(), sha(bytes)))
        .collect();
    assert_eq!(back, expected, "every file back, unchanged");
    delete_and_expect_nothing_running(&env, &["fs"]).await;
}

/// Stops Service `fs`: its volumes archived, its nodes gone.
async fn stop(env: &Env) {
    apply(env, filesystem(2, "Stopped")).await.unwrap();
    env.wait_service("fs", "fs stopped with its data saved", |s| {
        s.status.as_ref().is_some_and(|s| s.saved_data.is_some())
    })
    .await;
    wait::until("no storage node left", LIMIT, || async {
        Ok(env.nodes("fs").await.is_empty())
    })
    .await
    .unwrap();
}

/// Starts Service `fs` on 2 new storage nodes.
async fn start(env: &Env) {
    apply(env, filesystem(2, "Running")).await.unwrap();
    env.wait_ready("fs", "storage 2/2").await;
}

/// Writes files `late/N.txt` through a mount, each synced before it counts as acknowledged,
/// until finished.
struct FileWriter {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeMap<String, String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl FileWriter {
    fn start(mount: &Path) -> Self {
        std::fs::create_dir_all(mount.join("late")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
        let thread = std::thread::spawn({
            let (stop, acknowledged, mount) =
                (stop.clone(), acknowledged.clone(), mount.to_owned());
            move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("late/{n}.txt");
                    let contents = format!("written during the stop: {n}\n");
                    let written = std::fs::File::create(mount.join(&name)).and_then(|mut f| {
                        std::io::Write::write_all(&mut f, contents.as_bytes())?;
                        f.sync_all()
                    });
                    match written {
                        Ok(()) => {
                            acknowledged
                                .lock()
                                .unwrap()
                                .insert(name, sha(contents.as_bytes()));
                            n += 1;
                            // About 20 files a second: each move heals every one.
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            }
        });
        Self {
            stop,
            acknowledged,
            thread,
        }
    }

    /// Stops writing (a write hung on a mount whose servers are gone is left behind after a
    /// minute); the acknowledged files with their digests.
    fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::mem::take(&mut *self.acknowledged.lock().unwrap())
    }
}

/// Runs cpsctl in the test's namespace.
fn cpsctl_run(env: &Env, args: &[&str]) -> std::process::Output {
    std::process::Command::new(conpaas_e2e::tools::cpsctl())
        .args(["-n", &env.ns])
        .args(args)
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Runs cpsctl in the test's namespace; its standard output's bytes (it must succeed).
fn cpsctl_bytes(env: &Env, args: &[&str]) -> Vec<u8> {
    let out = cpsctl_run(env, args);
    assert!(
        out.status.success(),
        "cpsctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The mount points of this machine.
fn conpaas_e2e_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}
