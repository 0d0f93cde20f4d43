//! What keeps the controller from deepening an overload of the API server: at most a fixed
//! number of writes in flight at once (reads come from the watch caches and are not limited),
//! and a request the server refuses for load (429, 503, 504) is sent again only after the wait
//! the server asked for (`Retry-After`) or a growing, jittered backoff. A write waiting out a
//! refusal keeps its slot, so when the server pushes back the whole controller slows down
//! instead of queueing more work behind it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request};
use kube::client::Body;
use kube::client::retry::RetryPolicy;
use tokio::sync::Semaphore;
use tower::buffer::BufferLayer;
use tower::layer::util::{Identity, Stack};
use tower::retry::RetryLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};

/// The layers the controller's client adds around kube's HTTP stack, outermost first: the write
/// limit, the retry of refused requests, and a buffer that makes the stack cloneable for retries.
pub type Layers = Stack<
    BufferLayer<Request<Body>>,
    Stack<RetryLayer<RetryPolicy>, Stack<WriteLimitLayer, Identity>>,
>;

/// The controller client's layers with at most `max_writes` writes in flight. Build the client
/// with kube's own retry turned off (`Config::default_retry = false`): this one replaces it.
pub fn layers(max_writes: usize) -> Layers {
    ServiceBuilder::new()
        .layer(WriteLimitLayer::new(max_writes))
        .layer(RetryLayer::new(retry_policy()))
        .layer(BufferLayer::new(1024))
        .into_inner()
}

/// Up to 8 retries from 200 ms, doubling with jitter to at most 30 s between tries, or what the
/// server's `Retry-After` says when that is longer.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(30), 8, true)
        .expect("valid backoff bounds")
}

/// Makes [`WriteLimit`]s sharing one pool of slots.
#[derive(Clone)]
pub struct WriteLimitLayer {
    slots: Arc<Semaphore>,
}

impl WriteLimitLayer {
    /// At most `max_writes` writes in flight through every service this layer makes.
    pub fn new(max_writes: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_writes.max(1))),
        }
    }
}

impl<S> Layer<S> for WriteLimitLayer {
    type Service = WriteLimit<S>;

    fn layer(&self, inner: S) -> WriteLimit<S> {
        WriteLimit {
            inner,
            slots: self.slots.clone(),
        }
    }
}

/// Holds a slot for every write (anything but GET, HEAD, OPTIONS) until its response arrives.
#[derive(Clone)]
pub struct WriteLimit<S> {
    inner: S,
    slots: Arc<Semaphore>,
}

impl<S, B> Service<Request<B>> for WriteLimit<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The readied service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let slots = self.slots.clone();
        let write = !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        Box::pin(async move {
            let _slot = if write {
                Some(slots.acquire_owned().await.map_err(BoxError::from)?)
            } else {
                None
            };
            inner.call(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Response, StatusCode};
    use tokio::time::Instant;
    use tower::ServiceExt;
    use tower::util::BoxService;

    use super::*;

    type Inner = BoxService<Request<Body>, Response<String>, BoxError>;

    fn request(method: Method) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri("/apis/conpaas.io/v1alpha1/namespaces/a/servicenodes/n/status")
            .body(Body::from(b"{}".to_vec()))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_retry_after_is_waited_out_then_sent_again() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let inner: Inner = BoxService::new(tower::service_fn({
            let sent = sent.clone();
            move |_: Request<Body>| {
                let sent = sent.clone();
                async move {
                    let mut sent = sent.lock().unwrap();
                    sent.push(Instant::now());
                    let response = if sent.len() == 1 {
                        Response::builder()
                            .status(StatusCode::TOO_MANY_REQUESTS)
                            .header("Retry-After", "7")
                            .body(String::new())
                    } else {
                        Response::builder().body("applied".to_string())
                    };
                    Ok::<_, BoxError>(response.unwrap())
                }
            }
        }));
        let service = layers(4).layer(inner);
        let response = service.oneshot(request(Method::PATCH)).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the retried write went through"
        );
        let sent = sent.lock().unwrap();
        assert_eq!(sent.len(), 2, "sent once more after the refusal");
        assert!(
            sent[1] - sent[0] >= Duration::from_secs(7),
            "waited {:?}, the server asked for 7 s",
            sent[1] - sent[0]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_beyond_the_limit_wait_and_reads_do_not() {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let inner: Inner = BoxService::new(tower::service_fn({
            let (in_flight, most) = (in_flight.clone(), most.clone());
            move |r: Request<Body>| {
                let (in_flight, most) = (in_flight.clone(), most.clone());
                async move {
                    let write = r.method() != Method::GET;
                    if write {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if write {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                    Ok::<_, BoxError>(Response::new(String::new()))
                }
            }
        }));
        let service = layers(3).layer(inner);
        let started = Instant::now();
        let reads = (0..10).map(|_| service.clone().oneshot(request(Method::GET)));
        futures::future::try_join_all(reads).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "reads are not limited"
        );
        let started = Instant::now();
        let writes = (0..9).map(|_| service.clone().oneshot(request(Method::POST)));
        futures::future::try_join_all(writes).await.unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 3, "at most 3 writes in flight");
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "9 writes of 1 s through 3 slots take 3 s"
        );
    }
}
