//! The client: one method per XML-RPC call, each returning the call's result or its error.

use std::io::Cursor;

use xmlrpc::{Request, Transport, Value};

use crate::error::{Error, ErrorCode};
use crate::vm::Vm;

/// Which VMs `one.vmpool.info` lists, by owner (OpenNebula's filter flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolFilter {
    /// -2: every VM the session may see.
    All,
    /// -1: the user's and their groups' VMs.
    MineAndGroups,
    /// -3: only the user's VMs.
    Mine,
}

impl PoolFilter {
    fn flag(self) -> i32 {
        match self {
            PoolFilter::All => -2,
            PoolFilter::MineAndGroups => -1,
            PoolFilter::Mine => -3,
        }
    }
}

/// A connection to one OpenNebula front-end.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    session: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The session string is a credential: never printed.
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Hands the crate's parser a reply already received over async HTTP.
struct Received(Vec<u8>);

impl Transport for Received {
    type Stream = Cursor<Vec<u8>>;

    fn transmit(
        self,
        _request: &Request<'_>,
    ) -> Result<Self::Stream, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Cursor::new(self.0))
    }
}

impl Client {
    /// A client for the XML-RPC `endpoint` (e.g. `http://one:2633/RPC2`) with the session
    /// string `user:password` (or `user:token`), and a 30 s timeout per call.
    pub fn new(endpoint: impl Into<String>, session: impl Into<String>) -> Result<Self, Error> {
        let endpoint = endpoint.into();
        // reqwest's TLS needs a process-wide crypto provider; install ring unless the
        // application chose one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Transport {
                method: "connect".into(),
                message: format!("{endpoint}: {e}"),
                status: None,
            })?;
        Ok(Self {
            http,
            endpoint,
            session: session.into(),
        })
    }

    /// The endpoint this client calls.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls `method` with the session and `args`; returns the result element of a successful
    /// reply.
    pub async fn call(&self, method: &str, args: Vec<Value>) -> Result<Value, Error> {
        let mut request = Request::new(method).arg(self.session.as_str());
        for arg in args {
            request = request.arg(arg);
        }
        let mut body = Vec::new();
        request
            .write_as_xml(&mut body)
            .map_err(|e| malformed(method, format!("encode the request: {e}")))?;
        let transport = |message: String, status: Option<u16>| Error::Transport {
            method: method.into(),
            message,
            status,
        };
        let response = self
            .http
            .post(&self.endpoint)
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(e.to_string(), None))?;
        let status = response.status();
        if !status.is_success() {
            return Err(transport(format!("HTTP {status}"), Some(status.as_u16())));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport(e.to_string(), Some(status.as_u16())))?;
        let reply = request
            .call(Received(bytes.to_vec()))
            .map_err(|e| malformed(method, e.to_string()))?;
        let parts = reply
            .as_array()
            .filter(|p| p.len() >= 2)
            .ok_or_else(|| malformed(method, "expected [success, result, ...]".into()))?;
        match parts[0].as_bool() {
            Some(true) => Ok(parts[1].clone()),
            Some(false) => Err(Error::Api {
                method: method.into(),
                code: ErrorCode::from_code(parts.get(2).and_then(Value::as_i32).unwrap_or(-1)),
                message: parts[1].as_str().unwrap_or_default().to_string(),
            }),
            None => Err(malformed(
                method,
                "the first element is not a boolean".into(),
            )),
        }
    }

    /// `one.system.version`: OpenNebula's version, also a cheap check of the credentials.
    pub async fn version(&self) -> Result<String, Error> {
        let method = "one.system.version";
        let v = self.call(method, vec![]).await?;
        text(method, &v)
    }

    /// `one.template.instantiate`: a VM from template `template_id`, named `name`, with
    /// `extra` (template text, e.g. `CONTEXT = [...]`) merged in. Returns the VM's ID.
    pub async fn template_instantiate(
        &self,
        template_id: i32,
        name: &str,
        hold: bool,
        extra: &str,
    ) -> Result<i64, Error> {
        let method = "one.template.instantiate";
        let args = vec![
            Value::Int(template_id),
            Value::from(name),
            Value::Bool(hold),
            Value::from(extra),
            Value::Bool(false),
        ];
        let v = self.call(method, args).await?;
        id(method, &v)
    }

    /// `one.vm.allocate`: a VM from a full template text. Returns the VM's ID.
    pub async fn vm_allocate(&self, template: &str, hold: bool) -> Result<i64, Error> {
        let method = "one.vm.allocate";
        let v = self
            .call(method, vec![Value::from(template), Value::Bool(hold)])
            .await?;
        id(method, &v)
    }

    /// `one.vm.info`: one VM.
    pub async fn vm_info(&self, vm: i64) -> Result<Vm, Error> {
        let method = "one.vm.info";
        let v = self.call(method, vec![Value::Int(vm as i32)]).await?;
        Vm::from_xml(&text(method, &v)?).map_err(|e| malformed(method, e))
    }

    /// `one.vmpool.info`: the VMs `filter` selects, all IDs, in any state but DONE.
    pub async fn vm_pool(&self, filter: PoolFilter) -> Result<Vec<Vm>, Error> {
        let method = "one.vmpool.info";
        let args = vec![
            Value::Int(filter.flag()),
            Value::Int(-1),
            Value::Int(-1),
            Value::Int(-1),
        ];
        let v = self.call(method, args).await?;
        Vm::pool_from_xml(&text(method, &v)?).map_err(|e| malformed(method, e))
    }

    /// `one.vm.update` in merge mode: sets the given user-template attributes (template text),
    /// keeping the others.
    pub async fn vm_update_merge(&self, vm: i64, attributes: &str) -> Result<(), Error> {
        let method = "one.vm.update";
        let args = vec![
            Value::Int(vm as i32),
            Value::from(attributes),
            Value::Int(1),
        ];
        self.call(method, args).await?;
        Ok(())
    }

    /// `one.vm.action`: e.g. `terminate` or `terminate-hard`.
    pub async fn vm_action(&self, action: &str, vm: i64) -> Result<(), Error> {
        let method = "one.vm.action";
        self.call(method, vec![Value::from(action), Value::Int(vm as i32)])
            .await?;
        Ok(())
    }
}

fn malformed(method: &str, message: String) -> Error {
    Error::Malformed {
        method: method.into(),
        message,
    }
}

fn text(method: &str, v: &Value) -> Result<String, Error> {
    v.as_str()
        .map(String::from)
        .ok_or_else(|| malformed(method, format!("expected a string result, got {v:?}")))
}

fn id(method: &str, v: &Value) -> Result<i64, Error> {
    v.as_i64()
        .ok_or_else(|| malformed(method, format!("expected an integer ID, got {v:?}")))
}
