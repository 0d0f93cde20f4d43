//! `cpsctl mysql dump`: the database of a mysql Service as SQL, read through its endpoint with the
//! credentials of its Secret, as ConPaaS' manager dumped it. `cpsctl mysql password`: a new
//! password in that Secret, for the other of two users, which the nodes and links follow.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use conpaas_crds::types::mysql;
use conpaas_crds::v1alpha1::{Service, ServiceType};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::connect::Session;

async fn mysql_service(s: &Session, service: &str) -> anyhow::Result<Service> {
    let svc = s.service(service).await?;
    if svc.spec.r#type != ServiceType::Mysql {
        bail!(
            "service/{service} is of type {}, not mysql",
            svc.spec.r#type.as_str()
        );
    }
    Ok(svc)
}

/// The Secret's `username` and `password`.
fn credentials(secret: &Secret) -> anyhow::Result<(String, String)> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .with_context(|| format!("Secret {name} has no {key:?}"))
    };
    Ok((field("username")?, field("password")?))
}

pub async fn password(s: &Session, service: &str, wait: Option<Duration>) -> anyhow::Result<()> {
    let svc = mysql_service(s, service).await?;
    let secrets = Api::<Secret>::namespaced(s.client.clone(), &s.namespace);
    let name = mysql::secret_name(service);
    let secret = secrets
        .get(&name)
        .await
        .with_context(|| format!("read Secret {name} (its credentials)"))?;
    let (user, _) = credentials(&secret)?;
    let next = mysql::alternate_user(&user);
    // Refused if the Secret changed since it was read: two rotations at once must not both
    // think they switched from the same user.
    let patch = json!({
        "metadata": {"resourceVersion": secret.metadata.resource_version},
        "stringData": {"username": next, "password": conpaas_crds::types::random_secret()},
    });
    let rotated = secrets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("write the new credentials into Secret {name}"))?;
    let version = rotated.metadata.resource_version.unwrap_or_default();
    let grace = svc
        .spec
        .settings
        .get("previous_user_seconds")
        .map_or("300", String::as_str);
    println!(
        "service/{service}: Secret {name} names user {next} with a new password; the mysql nodes apply it, then linked services switch; user {user} stops working {grace} s after"
    );
    let Some(timeout) = wait else {
        return Ok(());
    };
    let services = Api::<Service>::namespaced(s.client.clone(), &s.namespace);
    let started = Instant::now();
    loop {
        let now = services.get(service).await?;
        let accepted = now.status.and_then(|st| st.credentials_version);
        if accepted.as_deref() == Some(version.as_str()) {
            println!("service/{service}: every mysql node accepts the new credentials");
            return Ok(());
        }
        if started.elapsed() >= timeout {
            bail!(
                "service/{service}: the mysql nodes did not all accept the new credentials within {} s (accepted: {})",
                timeout.as_secs(),
                accepted.as_deref().unwrap_or("none")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn dump(s: &Session, service: &str) -> anyhow::Result<()> {
    let svc = mysql_service(s, service).await?;
    let endpoint = svc
        .status
        .as_ref()
        .and_then(|st| st.endpoint.clone())
        .with_context(|| {
            format!("service/{service} has no endpoint yet; `cpsctl wait {service}`")
        })?;
    let (host, port) = endpoint
        .rsplit_once(':')
        .with_context(|| format!("service/{service}: endpoint {endpoint:?} is not host:port"))?;
    let secret_name = mysql::secret_name(service);
    let secret = Api::<Secret>::namespaced(s.client.clone(), &s.namespace)
        .get(&secret_name)
        .await
        .with_context(|| format!("read Secret {secret_name} (its credentials)"))?;
    let (user, password) = credentials(&secret)?;
    let database = svc
        .spec
        .settings
        .get("database")
        .cloned()
        .unwrap_or_else(|| "conpaas".into());
    let program = ["mariadb-dump", "mysqldump"]
        .into_iter()
        .find(|p| super::on_path(p))
        .context("mariadb-dump not found on PATH: install the MariaDB client (Debian package mariadb-client)")?;
    // The password goes by the environment, not the command line others can read.
    let status = tokio::process::Command::new(program)
        .args(["--host", host, "--port", port, "--user", &user])
        .args([
            "--single-transaction",
            // No LOCK TABLES: loaded into a Galera cluster, a dump holding them deadlocks with
            // any DDL another member orders before its rows.
            "--skip-add-locks",
            "--routines",
            "--triggers",
            "--events",
        ])
        .arg(&database)
        .env("MYSQL_PWD", password)
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("run {program}"))?;
    if !status.success() {
        bail!("{program} against {endpoint} failed ({status}); its message is above");
    }
    Ok(())
}
