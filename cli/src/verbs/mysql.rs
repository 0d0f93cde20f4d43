//! `cpsctl mysql dump`: the database of a mysql Service as SQL, read through its endpoint with the
//! credentials of its Secret, as ConPaaS' manager dumped it.

use std::process::Stdio;

use anyhow::{Context as _, bail};
use conpaas_crds::v1alpha1::ServiceType;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::connect::Session;

pub async fn dump(s: &Session, service: &str) -> anyhow::Result<()> {
    let svc = s.service(service).await?;
    if svc.spec.r#type != ServiceType::Mysql {
        bail!(
            "service/{service} is of type {}, not mysql",
            svc.spec.r#type.as_str()
        );
    }
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
    let secret_name = conpaas_crds::types::mysql::secret_name(service);
    let secret = Api::<Secret>::namespaced(s.client.clone(), &s.namespace)
        .get(&secret_name)
        .await
        .with_context(|| format!("read Secret {secret_name} (its credentials)"))?;
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .with_context(|| format!("Secret {secret_name} has no {key:?}"))
    };
    let (user, password) = (field("username")?, field("password")?);
    let database = svc
        .spec
        .settings
        .get("database")
        .cloned()
        .unwrap_or_else(|| "conpaas".into());
    let program = ["mariadb-dump", "mysqldump"]
        .into_iter()
        .find(|p| which(p))
        .context("mariadb-dump not found on PATH: install the MariaDB client (Debian package mariadb-client)")?;
    // The password goes by the environment, not the command line others can read.
    let status = tokio::process::Command::new(program)
        .args(["--host", host, "--port", port, "--user", &user])
        .args([
            "--single-transaction",
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

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
