//! The mapreduce service (ConPaaS' Hadoop) on real Spark standalone daemons: a word count over
//! files on a linked filesystem volume, submitted with `cpsctl mapreduce submit`, gives the counts
//! the test makes on its own; a slower one keeps running while the workers scale 2 -> 4 -> 2
//! (the leaving workers decommissioned, their VMs gone only once their tasks are done) and
//! finishes with the same counts. A driver that holds the secret but does not encrypt is
//! refused.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use conpaas_e2e::wait;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const WORDCOUNT: &str = r#"import sys, time
from pyspark.sql import SparkSession

source, target, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
spark = SparkSession.builder.appName("wordcount").getOrCreate()

def slowly(lines):
    time.sleep(pause)
    return lines

counts = (spark.sparkContext.textFile(source, minPartitions=40)
          .mapPartitions(slowly)
          .flatMap(lambda line: line.split())
          .map(lambda word: (word, 1))
          .reduceByKey(lambda a, b: a + b, 8))
counts.map(lambda kv: "%s\t%d" % kv).saveAsTextFile(target)
spark.stop()
"#;

fn filesystem() -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "fs"},
        "spec": {
            "application": "demo", "type": "filesystem", "replicas": 1,
            "settings": {"min_free_disk_percent": "0"},
            "filesystem": {"volumes": [{"name": "data"}]}
        }
    })
}

fn mapreduce(workers: i32) -> serde_json::Value {
    json!({
        "apiVersion": "conpaas.io/v1alpha1", "kind": "Service",
        "metadata": {"name": "jobs"},
        "spec": {
            "application": "demo", "type": "mapreduce", "replicas": workers,
            "settings": {"worker_cores": "1", "worker_memory_mb": "768"},
            "links": [{"service": "fs", "volume": "data", "mountPath": "data"}]
        }
    })
}

async fn apply(env: &Env, service: serde_json::Value) {
    let name = service["metadata"]["name"].as_str().unwrap().to_string();
    let pp = PatchParams::apply("conpaas-e2e").force();
    env.services()
        .patch(&name, &pp, &Patch::Apply(service))
        .await
        .unwrap();
}

/// Text files of words from a small vocabulary, and the count of each word, made here.
fn input(files: usize, words: usize) -> (BTreeMap<String, String>, BTreeMap<String, u64>) {
    const VOCABULARY: [&str; 12] = [
        "conpaas", "spark", "elastic", "cloud", "volume", "worker", "master", "credit", "gluster",
        "redis", "kube", "node",
    ];
    let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ std::process::id() as u64;
    let mut counts = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for f in 0..files {
        let mut text = String::new();
        for w in 0..words {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = VOCABULARY[(x % VOCABULARY.len() as u64) as usize];
            *counts.entry(word.to_string()).or_insert(0) += 1;
            text.push_str(word);
            text.push(if w % 12 == 11 { '\n' } else { ' ' });
        }
        texts.insert(format!("in/part-{f:02}.txt"), text);
    }
    (texts, counts)
}

/// The counts a job wrote into `dir` (Spark's `part-*` files, `word<TAB>count`).
fn output(dir: &Path) -> Result<BTreeMap<String, u64>, String> {
    if !dir.join("_SUCCESS").exists() {
        return Err(format!("{}: no _SUCCESS", dir.display()));
    }
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())?
            .lines()
        {
            let (word, count) = line.split_once('\t').ok_or(format!("line {line:?}"))?;
            counts.insert(
                word.to_string(),
                count.parse().map_err(|_| line.to_string())?,
            );
        }
    }
    Ok(counts)
}

/// `cpsctl mapreduce submit` of the word count, as a running process.
fn submit(env: &Env, app: &Path, target: &str, pause: &str) -> tokio::process::Child {
    submit_with(env, &[], app, target, pause)
}

/// Like [`submit`], with Spark settings (`KEY=VALUE`) of its own.
fn submit_with(
    env: &Env,
    conf: &[&str],
    app: &Path,
    target: &str,
    pause: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(conpaas_e2e::tools::cpsctl())
        .args(["-n", &env.ns, "mapreduce", "submit", "jobs"])
        .args(conf.iter().flat_map(|c| ["--conf", c]))
        .arg(app)
        .args([
            "file:///var/lib/conpaas/volumes/data/in",
            &format!("file:///var/lib/conpaas/volumes/data/{target}"),
            pause,
        ])
        .env("KUBECONFIG", &env.cp.kubeconfig)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits for a submitted job; panics with the driver's output if it failed, else returns it.
async fn finished(job: tokio::process::Child, what: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(600), job.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after 10 minutes"))
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // The cause is in the exceptions' first lines; the stack traces bury it.
    let causes: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("Exception") || l.contains("Caused by") || l.contains("ERROR"))
        .take(20)
        .collect();
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n--- tail ---\n{}",
        out.status,
        causes.join("\n"),
        tail(&said, 20)
    );
    said.into_owned()
}

/// The Spark master's view: its workers (address, state, cores used) and running applications.
async fn master_view(address: &str) -> (Vec<(String, String, u64)>, usize) {
    let Ok(text) = http_get_path(address, 8080, "/json/").await else {
        return (Vec::new(), 0);
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let workers = json["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                w["host"].as_str().unwrap_or_default().to_string(),
                w["state"].as_str().unwrap_or_default().to_string(),
                w["coresused"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (workers, json["activeapps"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_word_count_runs_through_worker_scaling_with_the_right_counts() {
    let env = env("mapreduce-e2e", 66).await;
    env.apply_cloud_and_app().await;
    apply(&env, filesystem()).await;
    apply(&env, mapreduce(2)).await;
    env.wait_ready("fs", "storage 1/1").await;
    env.wait_ready("jobs", "master 1/1, worker 2/2").await;
    let status = env.services().get("jobs").await.unwrap().status.unwrap();
    let endpoint = status.endpoint.clone().unwrap();
    let master = endpoint
        .trim_start_matches("spark://")
        .trim_end_matches(":7077")
        .to_string();
    assert!(endpoint.starts_with("spark://"), "{endpoint}");
    assert_eq!(
        status.url.as_deref(),
        Some(format!("http://{master}:8080").as_str())
    );

    // The input, written through the master node's mount of the volume.
    let master_node = env
        .nodes("jobs")
        .await
        .into_iter()
        .find(|n| n.spec.role == "master")
        .unwrap();
    let volume: PathBuf = env
        .state
        .path()
        .join("vms")
        .join(&master_node.spec.token)
        .join("work/volumes/fs-data");
    let (texts, expected) = input(40, 3000);
    for (name, text) in &texts {
        let path = volume.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let app = tempfile::Builder::new().suffix(".py").tempfile().unwrap();
    std::fs::write(app.path(), WORDCOUNT).unwrap();

    // A word count on 2 workers.
    let started = Instant::now();
    finished(
        submit(&env, app.path(), "out-2", "0"),
        "word count on 2 workers",
    )
    .await;
    println!(
        "word count of {} words on 2 workers: {:.1}s (submit to exit)",
        40 * 3000,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(output(&volume.join("out-2")).unwrap(), expected);

    // A slower one (a pause per partition) through 2 -> 4 -> 2 workers.
    let started = Instant::now();
    let job = submit(&env, app.path(), "out-scaled", "4");
    wait::until("the job running", LIMIT, || async {
        let (workers, apps) = master_view(&master).await;
        Ok(apps == 1 && workers.iter().filter(|w| w.2 > 0).count() == 2)
    })
    .await
    .unwrap();
    // Beside it, a driver that holds the secret but will not encrypt: refused (it gives up
    // registering after a minute, while the workers scale).
    let plain = submit_with(
        &env,
        &["spark.network.crypto.enabled=false"],
        app.path(),
        "out-plain",
        "0",
    );
    apply(&env, mapreduce(4)).await;
    env.wait_ready("jobs", "master 1/1, worker 4/4").await;
    wait::until("tasks on all 4 workers", LIMIT, || async {
        let (workers, _) = master_view(&master).await;
        Ok(workers.iter().filter(|w| w.1 == "ALIVE" && w.2 > 0).count() == 4)
    })
    .await
    .unwrap();
    println!(
        "4 workers busy {:.1}s after the job started",
        started.elapsed().as_secs_f64()
    );
    let asked = Instant::now();
    apply(&env, mapreduce(2)).await;
    wait::until("2 workers left", Duration::from_secs(300), || async {
        Ok(env.nodes("jobs").await.len() == 3)
    })
    .await
    .unwrap();
    println!(
        "4 -> 2 workers, decommissioned and gone: {:.1}s",
        asked.elapsed().as_secs_f64()
    );
    let master_log = std::fs::read_to_string(
        env.state
            .path()
            .join("vms")
            .join(&master_node.spec.token)
            .join("work/logs/spark.out"),
    )
    .unwrap();
    assert_eq!(
        master_log.matches("Decommissioning worker").count(),
        2,
        "the leaving workers were decommissioned"
    );
    assert!(
        master_log.contains("authentication enabled"),
        "the master takes only drivers with the Service's secret"
    );
    let driver = finished(job, "word count through 2 -> 4 -> 2 workers").await;
    // Decommissioned, not killed: no task had to run again.
    let lost: Vec<&str> = driver.lines().filter(|l| l.contains("Lost task")).collect();
    assert!(lost.is_empty(), "tasks lost through the scaling: {lost:?}");
    println!(
        "word count through 2 -> 4 -> 2 workers: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(output(&volume.join("out-scaled")).unwrap(), expected);
    let refused = tokio::time::timeout(Duration::from_secs(300), plain.wait_with_output())
        .await
        .expect("the unencrypted driver did not give up within 300 s")
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && !volume.join("out-plain").exists(),
        "a driver that does not encrypt ran a job: {}",
        tail(&said, 20)
    );
    // Refused by the master, not failed for a reason of its own.
    assert!(
        said.contains("All masters are unresponsive"),
        "the unencrypted driver failed otherwise: {}",
        tail(&said, 20)
    );

    // The same word count on 4 workers.
    apply(&env, mapreduce(4)).await;
    env.wait_ready("jobs", "master 1/1, worker 4/4").await;
    let started = Instant::now();
    finished(
        submit(&env, app.path(), "out-4", "0"),
        "word count on 4 workers",
    )
    .await;
    println!(
        "word count of {} words on 4 workers: {:.1}s (submit to exit)",
        40 * 3000,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(output(&volume.join("out-4")).unwrap(), expected);

    delete_and_expect_nothing_running(&env, &["jobs", "fs"]).await;
}
