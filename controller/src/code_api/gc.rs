//! Removes archives from the store that no Service keeps (its versions, its last saves). An upload is stored before
//! cpsctl writes its version into the Service, so only archives older than a grace period go.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use conpaas_artifacts::{Listed, Store};
use conpaas_reconcilers::Context;
use conpaas_reconcilers::caches::readable;

/// The archives to delete: named by no version and written more than `grace` before `now`
/// (Unix seconds).
pub fn unreferenced(
    listed: &[Listed],
    referenced: &BTreeSet<String>,
    now: i64,
    grace: Duration,
) -> Vec<String> {
    listed
        .iter()
        .filter(|a| !referenced.contains(&a.sha256))
        .filter(|a| now - a.written >= grace.as_secs() as i64)
        .map(|a| a.sha256.clone())
        .collect()
}

/// Every archive a Service keeps (its versions, the data it saved at its last stops), or None
/// when a Service cannot be read (what it names is unknown, so nothing may be deleted).
fn named_archives(ctx: &Context) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in ctx.caches.services.state() {
        let service = readable(&entry)?;
        names.extend(service.kept_archives());
    }
    Some(names)
}

/// Sweeps the store every `every` while the controller runs.
pub async fn run(store: Store, ctx: Arc<Context>, grace: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if !ctx.caches.ready() {
            continue;
        }
        let Some(referenced) = named_archives(&ctx) else {
            tracing::info!("an unreadable Service may name archives: none is deleted this round");
            continue;
        };
        let listed = match store.list().await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "list the artifact store");
                continue;
            }
        };
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        for sha256 in unreferenced(&listed, &referenced, now, grace) {
            // Looked at again just before the delete: the listing may be seconds old, and an
            // archive uploaded again (written anew) and named meanwhile must stay.
            let still_named = named_archives(&ctx).is_none_or(|r| r.contains(&sha256));
            let rewritten = match store.written(&sha256).await {
                Ok(Some(written)) => now - written < grace.as_secs() as i64,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, %sha256, "look at an unreferenced archive");
                    continue;
                }
            };
            if still_named || rewritten {
                continue;
            }
            match store.delete(&sha256).await {
                Ok(()) => tracing::info!(%sha256, "deleted an archive no code version names"),
                Err(e) => tracing::warn!(error = %e, %sha256, "delete an unreferenced archive"),
            }
        }
        match store.sweep_uploads(now - grace.as_secs() as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "deleted uploads that never completed"),
            Err(e) => tracing::warn!(error = %e, "sweep unfinished uploads"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_archives_no_version_names_go() {
        let archive = |sha: &str, written: i64| Listed {
            sha256: sha.into(),
            size: 1,
            written,
        };
        let listed = [
            archive("named", 0),
            archive("old", 0),
            archive("fresh", 3000),
        ];
        let referenced = BTreeSet::from(["named".to_string()]);
        let gone = unreferenced(&listed, &referenced, 3600, Duration::from_secs(3600));
        assert_eq!(gone, vec!["old"]);
    }
}
