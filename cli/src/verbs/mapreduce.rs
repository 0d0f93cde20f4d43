//! `cpsctl mapreduce submit SERVICE APP [ARGS]`: runs `spark-submit` here against the Service's
//! Spark master, the driver on this machine and its output streamed to the terminal. The driver
//! listens on the address this machine reaches the master from (the workers connect back to it).
//! Linked volumes are mounted for the driver at the same paths the nodes show them at
//! (`/var/lib/conpaas/volumes/<mountPath>`), in a mount namespace of the run's own, so that a
//! job's `file://` paths mean the same everywhere: this needs root and GlusterFS' FUSE client.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use conpaas_crds::types::mapreduce::{self, VOLUME_ROOT};
use conpaas_crds::v1alpha1::ServiceType;

use crate::connect::Session;

/// A linked volume the driver mounts: `server:port`, the volume, where.
struct VolumeMount {
    host: String,
    port: String,
    volume: String,
    target: PathBuf,
}

pub async fn submit(
    s: &Session,
    service: &str,
    app: &Path,
    conf: &[String],
    no_volumes: bool,
    args: &[String],
) -> anyhow::Result<()> {
    let svc = s.service(service).await?;
    if svc.spec.r#type != ServiceType::Mapreduce {
        bail!(
            "service/{service} is of type {}, not mapreduce",
            svc.spec.r#type.as_str()
        );
    }
    let master = svc
        .status
        .as_ref()
        .and_then(|st| st.endpoint.clone())
        .with_context(|| format!("service/{service} has no master yet; `cpsctl wait {service}`"))?;
    if !app.is_file() {
        bail!("{}: no such file (the application to run)", app.display());
    }
    let spark_submit = spark_submit()?;
    let address = master.trim_start_matches("spark://");
    let driver = tokio::net::TcpStream::connect(address)
        .await
        .and_then(|c| c.local_addr())
        .with_context(|| format!("reach the Spark master at {address}"))?
        .ip()
        .to_string();
    let memory = svc
        .spec
        .settings
        .get("worker_memory_mb")
        .cloned()
        .unwrap_or_else(|| "1024".into());
    // Spark's shared secret, in a file only this user reads (not on the command line).
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(s.client.clone(), &s.namespace);
    let secret_name = mapreduce::secret_name(service);
    let secret = secrets
        .get(&secret_name)
        .await
        .with_context(|| format!("read Secret {secret_name} (Spark's shared secret)"))?
        .data
        .and_then(|d| d.get("secret").cloned())
        .with_context(|| format!("Secret {secret_name} has no \"secret\""))?;
    let mut properties = tempfile::NamedTempFile::new().context("write Spark's properties")?;
    std::io::Write::write_all(
        &mut properties,
        format!(
            // The daemons refuse a driver that does not encrypt.
            "spark.authenticate true\nspark.authenticate.secret {}\nspark.network.crypto.enabled true\nspark.network.crypto.saslFallback false\n",
            String::from_utf8_lossy(&secret.0)
        )
        .as_bytes(),
    )
    .context("write Spark's properties")?;
    let mut command: Vec<String> = vec![
        spark_submit.display().to_string(),
        "--master".into(),
        master.clone(),
        "--properties-file".into(),
        properties.path().display().to_string(),
    ];
    let defaults = [
        format!("spark.driver.host={driver}"),
        format!("spark.driver.bindAddress={driver}"),
        // One executor per worker, as large as the worker offers.
        format!("spark.executor.memory={memory}m"),
        // A decommissioned worker's executors finish their tasks and hand their blocks over.
        "spark.decommission.enabled=true".into(),
        "spark.storage.decommission.enabled=true".into(),
        "spark.storage.decommission.shuffleBlocks.enabled=true".into(),
        "spark.storage.decommission.rddBlocks.enabled=true".into(),
    ];
    for c in defaults.iter().chain(conf) {
        command.extend(["--conf".to_string(), c.clone()]);
    }
    command.push(app.display().to_string());
    command.extend(args.iter().cloned());

    let mut mounts = Vec::new();
    let mut env = Vec::new();
    for link in &svc.spec.links {
        let (Some(volume), Some(mount_path)) = (&link.volume, &link.mount_path) else {
            continue;
        };
        let fs = s.service(&link.service).await?;
        let endpoint = fs
            .status
            .as_ref()
            .and_then(|st| st.endpoint.clone())
            .with_context(|| format!("service/{} has no endpoint yet", link.service))?;
        let (host, port) = endpoint.rsplit_once(':').unwrap_or((&endpoint, "24007"));
        let target = Path::new(VOLUME_ROOT).join(mount_path);
        env.push((
            format!("{}_MOUNT", link.prefix()),
            target.display().to_string(),
        ));
        mounts.push(VolumeMount {
            host: host.to_string(),
            port: port.to_string(),
            volume: volume.clone(),
            target,
        });
    }
    let (program, argv) = if mounts.is_empty() || no_volumes {
        (command[0].clone(), command[1..].to_vec())
    } else if !nix::unistd::geteuid().is_root() {
        // A driver without them lists no input and commits output on its own disk.
        bail!(
            "mounting the linked volumes for the driver at {VOLUME_ROOT} needs root; run as root, or pass --no-volumes for a job whose driver uses none of them"
        );
    } else if !(Path::new("/sbin/mount.glusterfs").exists() || super::on_path("mount.glusterfs")) {
        bail!(
            "mount.glusterfs not found: install the GlusterFS client (Debian package glusterfs-client) to mount the linked volumes for the driver, or pass --no-volumes"
        );
    } else {
        in_namespace(&mounts, command)
    };
    let status = tokio::process::Command::new(&program)
        .args(&argv)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("run {program}"))?;
    if !status.success() {
        bail!("spark-submit failed ({status}); the driver's output is above");
    }
    Ok(())
}

/// spark-submit: `$SPARK_HOME/bin`, the PATH, or pyspark's pip package.
fn spark_submit() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("SPARK_HOME") {
        let path = PathBuf::from(home).join("bin/spark-submit");
        if path.is_file() {
            return Ok(path);
        }
    }
    if super::on_path("spark-submit") {
        return Ok(PathBuf::from("spark-submit"));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(out) = out
        && out.status.success()
    {
        let path =
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/spark-submit");
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("spark-submit not found: set SPARK_HOME, or `pip install pyspark==4.3.0` (with Java 17)")
}

/// `command` in a mount namespace of its own with every volume mounted, unmounted after.
fn in_namespace(mounts: &[VolumeMount], command: Vec<String>) -> (String, Vec<String>) {
    // The mounts come as arguments (no quoting), then `--`, then the command.
    let script = "targets=''; while [ \"$1\" != -- ]; do mkdir -p \"$4\" && mount -t glusterfs -o server-port=\"$2\",nosuid,nodev \"$1:/$3\" \"$4\" || exit 1; targets=\"$targets $4\"; shift 4; done; shift; \"$@\"; rc=$?; for t in $targets; do umount -l \"$t\"; done; exit $rc";
    let mut argv: Vec<String> = [
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        script,
        "sh",
    ]
    .map(String::from)
    .to_vec();
    for m in mounts {
        argv.extend([
            m.host.clone(),
            m.port.clone(),
            m.volume.clone(),
            m.target.display().to_string(),
        ]);
    }
    argv.push("--".into());
    argv.extend(command);
    ("unshare".into(), argv)
}
