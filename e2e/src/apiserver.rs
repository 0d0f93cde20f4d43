//! What the API server says it served: `apiserver_request_total` from its own `/metrics`, so
//! tests and benchmarks count every client's requests, not what a client believes it sent.

use std::collections::BTreeMap;

use kube::Client;

/// Writes: every mutating verb the API server counts.
pub const WRITES: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Requests served so far with one of `verbs`, by `"VERB resource/subresource"`.
pub async fn requests_by(client: &Client, verbs: &[&str]) -> anyhow::Result<BTreeMap<String, u64>> {
    count_by(client, |verb, resource, subresource, _| {
        verbs
            .contains(&verb)
            .then(|| request_key(verb, resource, subresource))
    })
    .await
}

/// Every request served so far, by `"VERB resource/subresource"`.
pub async fn all_requests_by(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    count_by(client, |verb, resource, subresource, _| {
        Some(request_key(verb, resource, subresource))
    })
    .await
}

fn request_key(verb: &str, resource: &str, subresource: &str) -> String {
    format!("{verb} {resource}/{subresource}")
}

/// Responses served so far by HTTP status code.
pub async fn responses_by_code(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    count_by(client, |_, _, _, code| Some(code.to_string())).await
}

/// Sums `apiserver_request_total` by the key `key` makes of a series' verb, resource,
/// subresource and code; series it returns None for are left out.
async fn count_by(
    client: &Client,
    key: impl Fn(&str, &str, &str, &str) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let label = |line: &str, name: &str| {
        let key = format!(",{name}=\"");
        let line = line.replacen('{', ",", 1);
        line.split(key.as_str())
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    let mut by = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some(k) = key(
            &label(line, "verb"),
            &label(line, "resource"),
            &label(line, "subresource"),
            &label(line, "code"),
        ) else {
            continue;
        };
        let n = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        *by.entry(k).or_insert(0) += n;
    }
    Ok(by)
}

/// What grew between two counts, by key.
pub fn grown(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}
