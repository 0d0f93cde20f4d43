//! Code versions pulled from git, as ConPaaS made one of each push (`git-<rev>`): every
//! Service with `spec.code.git` has its ref looked up every `intervalSeconds`; a commit not seen
//! before is fetched (only that commit), packed with `git archive` straight into the artifact
//! store, and added to `spec.code.versions` as `git-<short sha>` with its commit and digest;
//! with `autoActivate` it becomes the active version. A commit already stored (a force-push back
//! to it) is not packed again. Only public addresses are fetched from, unless an administrator
//! allows a network ([`destination`]), and nothing fetched is kept once packed. Failures (an
//! unknown ref, an unreachable URL, a refused address, a commit over the size limit) reach the
//! Service as a Warning Event with git's own words (never the server's) and are retried with
//! backoff; nothing is stored or activated by a failed attempt. Runs on the leader only: it
//! writes the Service.

pub mod destination;
mod repo;
pub mod versions;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use conpaas_artifacts::Store;
use conpaas_crds::labels::ANNOTATION_GIT_COMMIT;
use conpaas_crds::v1alpha1::{GitSource, Service};
use conpaas_reconcilers::finalizers::full_name;
use conpaas_reconcilers::{Context, events};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Where the git loop fetches, how large a commit may be, and which non-public networks it
/// may reach.
#[derive(Debug, Clone)]
pub struct Settings {
    /// One scratch repository per Service (by uid) below this folder, removed after each look.
    pub cache_dir: PathBuf,
    /// Archives (and fetched commits) larger than this are refused, as uploads are.
    pub max_archive_bytes: u64,
    /// Networks an administrator allows besides public addresses.
    pub allowed_networks: destination::AllowedNetworks,
}

/// How long packing one commit into the store may take.
const PACK_DEADLINE: Duration = Duration::from_secs(300);

/// The longest wait between attempts of a failing source.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// When a source is looked at next, and how many attempts in a row failed.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    due: Instant,
    failures: u32,
}

/// Looks at every Service's git source when it is due, for as long as the controller leads.
pub async fn run(ctx: Arc<Context>, store: Store, settings: Settings) {
    let mut schedules: HashMap<String, Schedule> = HashMap::new();
    // Scratch repositories a stopped controller left behind.
    let _ = std::fs::remove_dir_all(&settings.cache_dir);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.caches.ready() {
            continue;
        }
        // Only the Services with a git source are copied out of the cache.
        let services: Vec<Service> = ctx
            .caches
            .services
            .state()
            .iter()
            .filter_map(|s| s.0.as_ref().ok())
            .filter(|s| s.spec.code.as_ref().is_some_and(|c| c.git.is_some()))
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        schedules.retain(|uid, _| {
            let exists = services.iter().any(|s| s.uid().as_ref() == Some(uid));
            if !exists {
                // The Service (or its git source) is gone: so is its cache repository.
                let _ = std::fs::remove_dir_all(settings.cache_dir.join(uid));
            }
            exists
        });
        for service in services {
            let (Some(uid), Some(git)) = (
                service.uid(),
                service.spec.code.as_ref().and_then(|c| c.git.clone()),
            ) else {
                continue;
            };
            let now = Instant::now();
            let schedule = schedules.entry(uid.clone()).or_insert(Schedule {
                due: now,
                failures: 0,
            });
            if schedule.due > now {
                continue;
            }
            let interval = Duration::from_secs(git.interval_seconds.max(5) as u64);
            match sync(&ctx, &store, &settings, &service, &git, &uid).await {
                Ok(()) => {
                    *schedule = Schedule {
                        due: Instant::now() + interval,
                        failures: 0,
                    }
                }
                Err(Failure::Raced) => schedule.due = Instant::now(),
                Err(Failure::Failed(error)) => {
                    schedule.failures += 1;
                    let wait = (interval * 2u32.saturating_pow(schedule.failures - 1))
                        .min(MAX_BACKOFF.max(interval));
                    schedule.due = Instant::now() + wait;
                    let error = format!("{error:#}");
                    tracing::warn!(service = %full_name(&service), %error, retry_in = ?wait, "git source failed");
                    events::publish(
                        &ctx,
                        &service,
                        true,
                        "GitSyncFailed",
                        "PullCode",
                        format!("git {} {}: {error}", git.url, git.r#ref),
                    )
                    .await;
                }
            }
        }
    }
}

/// Why an attempt did not finish.
enum Failure {
    /// The Service changed between the read and the write: look again at once.
    Raced,
    /// Git, the store or the API server failed; said in the Event.
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Failed(e.into())
    }
}

/// One look at `service`'s git source: resolve the ref, store the commit if it is new, and
/// write the Service when its versions or active version change.
async fn sync(
    ctx: &Context,
    store: &Store,
    settings: &Settings,
    service: &Service,
    git: &GitSource,
    uid: &str,
) -> Result<(), Failure> {
    let started = Instant::now();
    let code = service.spec.code.clone().unwrap_or_default();
    let to = destination::check(&git.url, &settings.allowed_networks).await?;
    let mut commit = repo::resolve(&to, &git.r#ref).await?;
    let mut stored = None;
    if versions::known(&code, &commit).is_none() {
        let repo = repo::Repo::create(&settings.cache_dir.join(uid)).await?;
        commit = repo
            .fetch(&to, &git.r#ref, settings.max_archive_bytes)
            .await?;
        if versions::known(&code, &commit).is_none() {
            let body = repo.archive(&commit)?;
            // A commit that packs slowly (one blob repeated many times) would hold up every
            // Service's source: packing has a deadline too.
            let packed = tokio::time::timeout(
                PACK_DEADLINE,
                store.put(body, settings.max_archive_bytes, None),
            )
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "pack {} (commit {commit}): not done within {}s",
                    versions::version_name(&commit),
                    PACK_DEADLINE.as_secs()
                )
            })?;
            let archive = packed.with_context(|| {
                format!(
                    "store {} (commit {commit})",
                    versions::version_name(&commit)
                )
            })?;
            let namespace = service.namespace().unwrap_or_default();
            store
                .grant(&archive.sha256, &namespace)
                .await
                .context("record the archive's namespace in the store")?;
            stored = Some(archive);
        }
    }
    let last_seen = service.annotations().get(ANNOTATION_GIT_COMMIT);
    let previous = service
        .status
        .as_ref()
        .and_then(|s| s.previous_code_version.as_deref());
    let change = versions::change(
        &code,
        &commit,
        stored.as_ref().map(|s| s.sha256.as_str()),
        last_seen.map(String::as_str),
        git.auto_activate,
        previous,
    );
    // The commit is recorded whenever the ref moved, so a later look does not take an old move
    // for a new one (and activate over a version chosen by hand since).
    if change.is_none() && last_seen.map(String::as_str) == Some(commit.as_str()) {
        return Ok(());
    }
    let mut patch = json!({
        "metadata": {
            "resourceVersion": service.resource_version(),
            "annotations": {ANNOTATION_GIT_COMMIT: commit},
        },
    });
    // The whole list is written, so the write is refused if anyone changed the Service since
    // it was read (a version uploaded meanwhile is never lost).
    if let Some(change) = &change {
        patch["spec"] = json!({"code": {"versions": change.versions}});
        if let Some(active) = &change.activate {
            patch["spec"]["code"]["active"] = json!(active);
        }
    }
    let api: Api<Service> = Api::namespaced(
        ctx.client.clone(),
        service.namespace().as_deref().unwrap_or_default(),
    );
    match api
        .patch(
            &service.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => return Err(Failure::Raced),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("record the version of commit {commit}"))
                .into());
        }
    }
    let name = versions::version_name(&commit);
    if let Some(archive) = &stored {
        tracing::info!(service = %full_name(service), version = %name, %commit, bytes = archive.size, took = ?started.elapsed(), "stored a git version");
        let note = format!(
            "stored {name} (commit {commit}, {} bytes) from {} {}",
            archive.size, git.url, git.r#ref
        );
        events::publish(ctx, service, false, "GitVersionStored", "PullCode", note).await;
    }
    if let Some(active) = change.as_ref().and_then(|c| c.activate.as_ref()) {
        let note = format!(
            "activated {active}: {} {} is at {commit}",
            git.url, git.r#ref
        );
        events::publish(ctx, service, false, "GitVersionActivated", "PullCode", note).await;
    }
    Ok(())
}
