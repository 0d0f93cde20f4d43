//! A wrapper that makes any driver refuse chosen calls, for tests of how the loops handle a
//! cloud's refusals: `Faulty::new(MemoryCloud::new()).fail(Operation::Create, error)`.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{CloudError, ComputeDriver, CreateRequest, Tags, Vm};

/// A driver call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `create`
    Create,
    /// `get`
    Get,
    /// `list`
    List,
    /// `delete`
    Delete,
    /// `set_tags`
    SetTags,
}

/// `inner`, but the calls given to [`Faulty::fail`] return their error until [`Faulty::heal`].
pub struct Faulty<D> {
    inner: D,
    failures: Mutex<HashMap<Operation, CloudError>>,
}

impl<D: ComputeDriver> Faulty<D> {
    /// `inner` without failures.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Makes every `operation` return `error`.
    pub fn fail(self, operation: Operation, error: CloudError) -> Self {
        self.lock().insert(operation, error);
        self
    }

    /// Lets every call through again.
    pub fn heal(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Operation, CloudError>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, operation: Operation) -> Result<(), CloudError> {
        match self.lock().get(&operation) {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl<D: ComputeDriver> ComputeDriver for Faulty<D> {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError> {
        self.check(Operation::Create)?;
        self.inner.create(request).await
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError> {
        self.check(Operation::Get)?;
        self.inner.get(id).await
    }

    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError> {
        self.check(Operation::List)?;
        self.inner.list(tags).await
    }

    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        self.check(Operation::Delete)?;
        self.inner.delete(id).await
    }

    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError> {
        self.check(Operation::SetTags)?;
        self.inner.set_tags(id, tags).await
    }
}
