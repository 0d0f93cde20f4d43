//! Prometheus metrics of the loops and the cloud calls, served by the controller at `/metrics`.
//! Labels are bounded: kinds, error categories, provider and operation names — never free text.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use conpaas_cloud::{CloudError, ComputeDriver, CreateRequest, Tags, Vm};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudCallLabels {
    provider: String,
    operation: String,
    result: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    in_flight: Family<KindLabels, Gauge>,
    cloud_calls: Family<CloudCallLabels, Counter>,
    cloud_call_seconds: Family<CloudCallLabels, Histogram>,
    node_ready_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("conpaas");
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles that finished, by kind",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by kind and error category",
            reconcile_errors.clone(),
        );
        let in_flight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now, by kind",
            in_flight.clone(),
        );
        let cloud_calls = Family::<CloudCallLabels, Counter>::default();
        registry.register(
            "cloud_calls",
            "Cloud API calls by provider, operation and result",
            cloud_calls.clone(),
        );
        let cloud_call_seconds = Family::<CloudCallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 10))
        });
        registry.register(
            "cloud_call_seconds",
            "Cloud API call latency",
            cloud_call_seconds.clone(),
        );
        let node_ready_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 14));
        registry.register(
            "node_ready_seconds",
            "Time from a VM's creation to its node being Ready",
            node_ready_seconds.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            in_flight,
            cloud_calls,
            cloud_call_seconds,
            node_ready_seconds,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts a reconcile of `kind` while the returned guard lives, and its outcome.
    pub fn reconcile(self: &Arc<Self>, kind: &str) -> ReconcileGuard {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        self.in_flight.get_or_create(&labels).inc();
        ReconcileGuard {
            metrics: self.clone(),
            labels,
        }
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, kind: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Records how long a node took from VM creation to Ready.
    pub fn node_ready(&self, seconds: f64) {
        self.node_ready_seconds.observe(seconds);
    }

    fn cloud_call(
        &self,
        provider: &str,
        operation: &str,
        result: &Result<(), &CloudError>,
        started: Instant,
    ) {
        let labels = CloudCallLabels {
            provider: provider.into(),
            operation: operation.into(),
            result: match result {
                Ok(()) => "ok".into(),
                Err(e) => e.category().into(),
            },
        };
        self.cloud_calls.get_or_create(&labels).inc();
        self.cloud_call_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Decrements the in-flight gauge and counts the reconcile when dropped.
pub struct ReconcileGuard {
    metrics: Arc<Metrics>,
    labels: KindLabels,
}

impl Drop for ReconcileGuard {
    fn drop(&mut self) {
        self.metrics.in_flight.get_or_create(&self.labels).dec();
        self.metrics.reconciles.get_or_create(&self.labels).inc();
    }
}

/// Wraps any driver and counts and times its calls.
pub struct Metered {
    inner: Arc<dyn ComputeDriver>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// `inner`, measured into `metrics`.
    pub fn new(inner: Arc<dyn ComputeDriver>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, CloudError>) {
        self.metrics.cloud_call(
            self.inner.provider(),
            operation,
            &result.as_ref().map(|_| ()),
            started,
        );
    }
}

#[async_trait]
impl ComputeDriver for Metered {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError> {
        let started = Instant::now();
        let result = self.inner.create(request).await;
        self.record("create", started, &result);
        result
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError> {
        let started = Instant::now();
        let result = self.inner.get(id).await;
        self.record("get", started, &result);
        result
    }

    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError> {
        let started = Instant::now();
        let result = self.inner.list(tags).await;
        self.record("list", started, &result);
        result
    }

    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        let started = Instant::now();
        let result = self.inner.delete(id).await;
        self.record("delete", started, &result);
        result
    }

    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError> {
        let started = Instant::now();
        let result = self.inner.set_tags(id, tags).await;
        self.record("set_tags", started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conpaas_cloud::memory::MemoryCloud;

    #[tokio::test]
    async fn counts_reconciles_errors_and_cloud_calls() {
        let metrics = Arc::new(Metrics::default());
        drop(metrics.reconcile("Service"));
        metrics.failed("Service", "KubeApi");
        let driver = Metered::new(Arc::new(MemoryCloud::new()), metrics.clone());
        driver
            .create(&conpaas_cloud::conformance::request("m-1"))
            .await
            .unwrap();
        driver.get("nope").await.unwrap();
        let text = metrics.encode();
        assert!(
            text.contains(r#"conpaas_reconciles_total{kind="Service"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conpaas_reconcile_errors_total{kind="Service",reason="KubeApi"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"conpaas_cloud_calls_total{provider="memory",operation="create",result="ok"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"conpaas_reconciles_in_flight{kind="Service"} 0"#),
            "{text}"
        );
    }
}
