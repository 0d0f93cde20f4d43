//! OpenNebula through the `opennebula` XML-RPC client. A VM comes from a template (by ID, or an
//! inline template with `one.vm.allocate`); its name derives from the node's token; the agent's
//! bootstrap goes into CONTEXT (`CONPAAS_USER_DATA`, base64), the way OpenNebula
//! contextualization hands data to a guest; ownership goes into user-template attributes:
//! `CONPAAS_TOKEN` and `CONPAAS_TAGS` (the tags as JSON, exactly as set). Observe is one
//! `one.vmpool.info` per call, filtered here; a failed lookup is an error, never "absent".

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use opennebula::{Client, Error as OneError, ErrorCode, PoolFilter, VmState as OneState};

use crate::driver::{check_token, tags_match};
use crate::limits::Limits;
use crate::{CloudError, ComputeDriver, CreateRequest, Tags, Vm, VmState};

const ATTR_TOKEN: &str = "CONPAAS_TOKEN";
const ATTR_TAGS: &str = "CONPAAS_TAGS";
const ATTR_INSTANCE_TYPE: &str = "CONPAAS_INSTANCE_TYPE";

/// Where and how VMs are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenNebulaConfig {
    /// The XML-RPC endpoint, e.g. `http://one:2633/RPC2`.
    pub endpoint: String,
    /// The session string, `user:password` or `user:token`.
    pub session: String,
    /// Template to instantiate; exclusive with `template`.
    pub template_id: Option<i32>,
    /// A full VM template (OpenNebula template text) to allocate; exclusive with `template_id`.
    pub template: Option<String>,
    /// Virtual networks the VM gets a NIC on (added to the template).
    pub network_ids: Vec<i32>,
    /// Calls per second per operation.
    pub calls_per_second: u32,
}

/// The OpenNebula backend.
#[derive(Debug)]
pub struct OpenNebula {
    client: Client,
    config: OpenNebulaConfig,
    limits: Limits,
}

impl OpenNebula {
    /// A driver for one Cloud.
    pub fn new(config: OpenNebulaConfig) -> Result<Self, CloudError> {
        if config.template_id.is_some() == config.template.is_some() {
            return Err(CloudError::Other(
                "opennebula: exactly one of templateId or template is needed".into(),
            ));
        }
        let client = Client::new(&config.endpoint, &config.session).map_err(map_error)?;
        Ok(Self {
            client,
            limits: Limits::new(config.calls_per_second),
            config,
        })
    }

    /// OpenNebula's version: checks the endpoint and the credentials.
    pub async fn check(&self) -> Result<String, CloudError> {
        self.limits.wait("describe").await;
        self.client.version().await.map_err(map_error)
    }

    async fn all(&self) -> Result<Vec<opennebula::Vm>, CloudError> {
        self.limits.wait("describe").await;
        self.client
            .vm_pool(PoolFilter::All)
            .await
            .map_err(map_error)
    }

    fn extra_template(&self, request: &CreateRequest) -> String {
        let user_data = base64::engine::general_purpose::STANDARD.encode(&request.user_data);
        let tags = serde_json::to_string(&request.tags).expect("tags serialize");
        let mut text = format!(
            "{ATTR_TOKEN} = \"{}\"\n{ATTR_TAGS} = \"{}\"\nCONTEXT = [ CONPAAS_USER_DATA = \"{user_data}\", NETWORK = \"YES\" ]\n",
            quote(&request.token),
            quote(&tags)
        );
        if let Some(t) = &request.instance_type {
            text.push_str(&format!("{ATTR_INSTANCE_TYPE} = \"{}\"\n", quote(t)));
        }
        for network in &self.config.network_ids {
            text.push_str(&format!("NIC = [ NETWORK_ID = \"{network}\" ]\n"));
        }
        if let Some(gib) = request.volume_gib {
            // A volatile disk: made with the VM and destroyed with it.
            text.push_str(&format!(
                "DISK = [ TYPE = \"fs\", SIZE = \"{}\", FORMAT = \"raw\" ]\n",
                u64::from(gib) * 1024
            ));
        }
        text
    }
}

/// Escapes a value for a double-quoted OpenNebula template attribute.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The VM's name: derived from the node's token, so it is the same on every retry.
fn vm_name(token: &str) -> String {
    format!("conpaas-{token}")
}

fn state(vm: &opennebula::Vm) -> VmState {
    match vm.state {
        OneState::Done => VmState::Terminated,
        OneState::Active if vm.lcm_state == opennebula::LcmState::RUNNING => VmState::Running,
        OneState::Active if vm.lcm_state == opennebula::LcmState::UNKNOWN => VmState::Unknown,
        OneState::Active if vm.lcm_state.is_failure() => VmState::Failed,
        OneState::Active if vm.lcm_state.is_stopping() => VmState::Stopping,
        OneState::Active
        | OneState::Init
        | OneState::Pending
        | OneState::Hold
        | OneState::Cloning => VmState::Pending,
        // Powered off, stopped, suspended or undeployed by someone else: it does not serve,
        // and its disks are kept.
        OneState::Stopped | OneState::Suspended | OneState::Poweroff | OneState::Undeployed => {
            VmState::Halted
        }
        OneState::Failed | OneState::CloningFailure | OneState::Other(_) => VmState::Failed,
    }
}

fn tags_of(vm: &opennebula::Vm) -> Tags {
    vm.user_template
        .get(ATTR_TAGS)
        .and_then(|json| serde_json::from_str::<BTreeMap<String, String>>(json).ok())
        .unwrap_or_default()
}

fn view(vm: &opennebula::Vm) -> Vm {
    Vm {
        id: vm.id.to_string(),
        provider_id: format!("opennebula://{}", vm.id),
        token: vm
            .user_template
            .get(ATTR_TOKEN)
            .cloned()
            .unwrap_or_default(),
        state: state(vm),
        address: vm.ips.first().cloned(),
        tags: tags_of(vm),
        created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(vm.start_time.max(0) as u64),
    }
}

/// OpenNebula's errors by meaning.
fn map_error(e: OneError) -> CloudError {
    let text = e.to_string();
    match &e {
        OneError::Api { code, .. } => match code {
            ErrorCode::Authentication | ErrorCode::Authorization => CloudError::Unauthorized(text),
            ErrorCode::NoExists => CloudError::NotFound(text),
            ErrorCode::Allocate => CloudError::QuotaExceeded(text),
            ErrorCode::Internal | ErrorCode::Locked => CloudError::Transient(text),
            ErrorCode::Action | ErrorCode::XmlRpcApi | ErrorCode::Other(_) => {
                CloudError::Other(text)
            }
        },
        OneError::Transport { status, .. } => match status {
            Some(429) => CloudError::Throttled(text),
            Some(s) if (400..500).contains(s) => CloudError::Other(text),
            _ => CloudError::Transient(text),
        },
        // A proxy's error page or a cut reply: worth another try.
        OneError::Malformed { .. } => CloudError::Transient(text),
    }
}

/// OpenNebula IDs are numbers; anything else names no VM.
fn numeric(id: &str) -> Option<i64> {
    id.parse().ok()
}

#[async_trait]
impl ComputeDriver for OpenNebula {
    fn provider(&self) -> &'static str {
        "opennebula"
    }

    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError> {
        check_token(&request.token)?;
        // OpenNebula has no idempotency key: look the token up first.
        if let Some(existing) = self.all().await?.iter().find(|vm| {
            vm.user_template.get(ATTR_TOKEN) == Some(&request.token) && vm.state != OneState::Done
        }) {
            return Ok(view(existing));
        }
        let extra = self.extra_template(request);
        self.limits.wait("create").await;
        let id = match (&self.config.template_id, &self.config.template) {
            (Some(template), _) => {
                self.client
                    .template_instantiate(*template, &vm_name(&request.token), false, &extra)
                    .await
            }
            (None, Some(template)) => {
                let full = format!(
                    "{template}\nNAME = \"{}\"\n{extra}",
                    vm_name(&request.token)
                );
                self.client.vm_allocate(&full, false).await
            }
            (None, None) => unreachable!("checked by new"),
        }
        .map_err(map_error)?;
        self.limits.wait("describe").await;
        let vm = self.client.vm_info(id).await.map_err(map_error)?;
        Ok(view(&vm))
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError> {
        let Some(n) = numeric(id) else {
            return Ok(None);
        };
        self.limits.wait("describe").await;
        match self.client.vm_info(n).await {
            Ok(vm) => Ok(Some(view(&vm))),
            Err(e) if e.code() == Some(ErrorCode::NoExists) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError> {
        Ok(self
            .all()
            .await?
            .iter()
            .map(view)
            .filter(|vm| tags_match(&vm.tags, tags))
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        let Some(n) = numeric(id) else {
            return Ok(());
        };
        self.limits.wait("delete").await;
        match self.client.vm_action("terminate-hard", n).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::NoExists) => Ok(()),
            // Already DONE or being terminated: the action is not available any more.
            Err(e) if e.code() == Some(ErrorCode::Action) => match self.get(id).await? {
                None => Ok(()),
                Some(vm) if matches!(vm.state, VmState::Terminated | VmState::Stopping) => Ok(()),
                Some(_) => Err(map_error(e)),
            },
            Err(e) => Err(map_error(e)),
        }
    }

    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError> {
        let n = numeric(id).ok_or_else(|| CloudError::NotFound(format!("opennebula VM {id:?}")))?;
        let current = self
            .get(id)
            .await?
            .ok_or_else(|| CloudError::NotFound(format!("opennebula VM {id}")))?;
        let mut merged = current.tags;
        merged.extend(tags.clone());
        let json = serde_json::to_string(&merged).expect("tags serialize");
        self.limits.wait("tag").await;
        self.client
            .vm_update_merge(n, &format!("{ATTR_TAGS} = \"{}\"", quote(&json)))
            .await
            .map_err(map_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_volume_is_a_volatile_disk_of_the_vm() {
        let one = OpenNebula::new(OpenNebulaConfig {
            endpoint: "http://127.0.0.1:1/RPC2".into(),
            session: "a:b".into(),
            template_id: Some(0),
            template: None,
            network_ids: vec![],
            calls_per_second: 10,
        })
        .unwrap();
        let plain = crate::conformance::request("disk-1");
        assert!(!one.extra_template(&plain).contains("DISK"));
        let with = CreateRequest {
            volume_gib: Some(5),
            ..plain
        };
        assert!(
            one.extra_template(&with)
                .contains("DISK = [ TYPE = \"fs\", SIZE = \"5120\", FORMAT = \"raw\" ]"),
            "{}",
            one.extra_template(&with)
        );
    }

    #[test]
    fn states_and_errors_map_by_meaning() {
        let vm = |state, lcm| opennebula::Vm {
            id: 1,
            name: String::new(),
            state,
            lcm_state: opennebula::LcmState(lcm),
            start_time: 0,
            ips: vec![],
            user_template: BTreeMap::new(),
        };
        assert_eq!(state(&vm(OneState::Pending, 0)), VmState::Pending);
        assert_eq!(state(&vm(OneState::Active, 1)), VmState::Pending, "PROLOG");
        assert_eq!(state(&vm(OneState::Active, 3)), VmState::Running);
        assert_eq!(
            state(&vm(OneState::Active, 36)),
            VmState::Failed,
            "BOOT_FAILURE"
        );
        assert_eq!(
            state(&vm(OneState::Active, 12)),
            VmState::Stopping,
            "SHUTDOWN"
        );
        assert_eq!(state(&vm(OneState::Poweroff, 0)), VmState::Halted);
        assert_eq!(state(&vm(OneState::Suspended, 0)), VmState::Halted);
        assert_eq!(
            state(&vm(OneState::Active, 16)),
            VmState::Unknown,
            "UNKNOWN"
        );
        assert_eq!(state(&vm(OneState::Done, 0)), VmState::Terminated);
        let api = |code| OneError::Api {
            method: "m".into(),
            code,
            message: "x".into(),
        };
        assert_eq!(
            map_error(api(ErrorCode::Authentication)).category(),
            "Unauthorized"
        );
        assert_eq!(map_error(api(ErrorCode::NoExists)).category(), "NotFound");
        assert_eq!(
            map_error(api(ErrorCode::Allocate)).category(),
            "QuotaExceeded"
        );
        assert_eq!(map_error(api(ErrorCode::Locked)).category(), "Transient");
        let transport = |status| OneError::Transport {
            method: "m".into(),
            message: "x".into(),
            status,
        };
        assert_eq!(map_error(transport(Some(503))).category(), "Transient");
        assert_eq!(map_error(transport(Some(429))).category(), "Throttled");
        assert_eq!(map_error(transport(None)).category(), "Transient");
        assert_eq!(quote(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
