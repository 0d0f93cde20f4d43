//! Reading a Secret's values with the node's own token (which may read its own Service's
//! credentials and those of the Services it links to, no other).

use kube::Client;

/// The values of `keys` in the Secret `name`, and its resourceVersion; a missing or unsafe value
/// names the key.
pub async fn read(
    client: &Client,
    namespace: &str,
    name: &str,
    keys: &[&str],
) -> Result<(Vec<String>, String), String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(name)
        .await
        .map_err(|e| format!("read Secret {name}: {e}"))?;
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| format!("Secret {name} has no {key:?}"))
            .and_then(|value| {
                // The values go into configuration files and SQL strings.
                if value.is_empty() || value.chars().any(|c| c.is_control() || "\"'#\\`".contains(c)) {
                    Err(format!(
                        "Secret {name}: {key:?} must be non-empty, without control characters, quotes, '#', '\\' or '`'"
                    ))
                } else {
                    Ok(value)
                }
            })
    };
    let values = keys.iter().map(|k| field(k)).collect::<Result<_, _>>()?;
    Ok((
        values,
        secret.metadata.resource_version.clone().unwrap_or_default(),
    ))
}
