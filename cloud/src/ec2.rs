//! Amazon EC2 (or an EC2-compatible endpoint such as moto) through aws-sdk-ec2.
//!
//! Create = one RunInstances with the node's token as `ClientToken`, the agent's bootstrap as
//! user-data, and the ownership tags (plus `Name` and `conpaas.io/client-token`) set at launch.
//! ClientToken alone is not trusted (EC2 forgets tokens after a while, moto ignores them): the
//! token's tag is looked up first. Observe = one paginated DescribeInstances filtered by tags.
//! Delete = TerminateInstances. The SDK retries throttling and 5xx with backoff; what is left
//! maps into [`CloudError`] by its EC2 error code.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, Instance, InstanceStateName, InstanceType,
    ResourceType, Tag, TagSpecification, VolumeType,
};
use base64::Engine as _;

use crate::driver::check_token;
use crate::limits::Limits;
use crate::{CloudError, ComputeDriver, CreateRequest, Tags, Vm, VmState};

/// The tag holding the create's idempotency token.
const TAG_CLIENT_TOKEN: &str = "conpaas.io/client-token";
/// Where a node's data volume is attached (the image mounts it at `/var/lib/conpaas/volume`).
pub const DATA_VOLUME_DEVICE: &str = "/dev/sdf";

/// EC2 filters that match resources carrying every one of `tags`.
fn tag_filters(tags: &Tags) -> Vec<Filter> {
    tags.iter()
        .map(|(key, value)| {
            Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
                .build()
        })
        .collect()
}

/// A node's data volume as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolume {
    pub id: String,
    pub size_gib: i32,
    /// The instances it is attached to.
    pub attached_to: Vec<String>,
}

/// Where and how instances are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Config {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint URL; `None` uses `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
    /// AMI.
    pub image_id: String,
    /// Default instance type.
    pub instance_type: String,
    /// Subnet.
    pub subnet_id: Option<String>,
    /// Security group IDs.
    pub security_group_ids: Vec<String>,
    /// Key pair.
    pub key_name: Option<String>,
    /// Access key ID, secret and session token; `None` uses the SDK's default chain.
    pub credentials: Option<(String, String, Option<String>)>,
    /// Calls per second per operation.
    pub calls_per_second: u32,
}

/// The EC2 backend.
#[derive(Debug)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    config: Ec2Config,
    limits: Limits,
}

impl Ec2 {
    /// A driver for one Cloud.
    pub async fn new(config: Ec2Config) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((key, secret, session)) = &config.credentials {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                key,
                secret,
                session.clone(),
                None,
                "conpaas-cloud-secret",
            ));
        }
        let sdk = loader.load().await;
        Self {
            client: aws_sdk_ec2::Client::new(&sdk),
            limits: Limits::new(config.calls_per_second),
            config,
        }
    }

    /// Every instance carrying `tags`, in any state but terminated, across pages.
    async fn describe(&self, tags: &Tags, ids: &[String]) -> Result<Vec<Instance>, CloudError> {
        self.limits.wait("describe").await;
        let mut request = self
            .client
            .describe_instances()
            .set_filters((!tags.is_empty()).then(|| tag_filters(tags)));
        for id in ids {
            request = request.instance_ids(id);
        }
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(map_error)?;
            for reservation in page.reservations() {
                out.extend(reservation.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    /// The data volumes carrying `tags` (the nodes' volumes carry their VM's tags): what an
    /// operator or a test checks for volumes left behind.
    pub async fn data_volumes(&self, tags: &Tags) -> Result<Vec<DataVolume>, CloudError> {
        self.limits.wait("describe").await;
        let request = self
            .client
            .describe_volumes()
            .set_filters((!tags.is_empty()).then(|| tag_filters(tags)));
        let out = request.send().await.map_err(map_error)?;
        Ok(out
            .volumes()
            .iter()
            .map(|v| DataVolume {
                id: v.volume_id().unwrap_or_default().to_string(),
                size_gib: v.size().unwrap_or_default(),
                attached_to: v
                    .attachments()
                    .iter()
                    .filter_map(|a| a.instance_id().map(str::to_string))
                    .collect(),
            })
            .collect())
    }

    fn view(&self, instance: &Instance) -> Vm {
        let tags: Tags = instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect();
        let id = instance.instance_id().unwrap_or_default().to_string();
        Vm {
            provider_id: format!("ec2://{}/{id}", self.config.region),
            id,
            token: tags
                .get(TAG_CLIENT_TOKEN)
                .cloned()
                .or_else(|| instance.client_token().map(String::from))
                .unwrap_or_default(),
            state: state(instance.state().and_then(|s| s.name())),
            address: instance.private_ip_address().map(String::from),
            created_at: instance
                .launch_time()
                .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.secs().max(0) as u64))
                .unwrap_or(SystemTime::UNIX_EPOCH),
            tags: tags
                .into_iter()
                .filter(|(k, _)| k != TAG_CLIENT_TOKEN && k != "Name")
                .collect(),
        }
    }
}

fn state(name: Option<&InstanceStateName>) -> VmState {
    match name {
        Some(InstanceStateName::Running) => VmState::Running,
        Some(InstanceStateName::Pending) | None => VmState::Pending,
        // Terminating: its volumes go with it.
        Some(InstanceStateName::ShuttingDown) => VmState::Stopping,
        Some(InstanceStateName::Terminated) => VmState::Terminated,
        // Stopped, or on its way there, by someone else (ConPaaS only terminates): its volumes
        // are kept, so it is halted, not gone.
        Some(InstanceStateName::Stopped) | Some(InstanceStateName::Stopping) => VmState::Halted,
        // A state this SDK does not know: it does not serve.
        Some(_) => VmState::Failed,
    }
}

/// EC2's errors by meaning, from the error code (and the HTTP status when there is none).
fn map_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> CloudError {
    let code = e.code().unwrap_or_default().to_string();
    let text = format!(
        "{code}: {}",
        e.message()
            .map(String::from)
            .unwrap_or_else(|| format!("{e:?}"))
    );
    match code.as_str() {
        "InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed" => CloudError::NotFound(text),
        "IdempotentParameterMismatch" => CloudError::AlreadyExists(text),
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => {
            CloudError::Throttled(text)
        }
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => CloudError::Unauthorized(text),
        "InstanceLimitExceeded" | "InsufficientInstanceCapacity" | "VcpuLimitExceeded" => {
            CloudError::QuotaExceeded(text)
        }
        "InternalError" | "ServiceUnavailable" | "Unavailable" => CloudError::Transient(text),
        _ => match &e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => CloudError::Transient(text),
            _ => CloudError::Other(text),
        },
    }
}

#[async_trait]
impl ComputeDriver for Ec2 {
    fn provider(&self) -> &'static str {
        "ec2"
    }

    async fn create(&self, request: &CreateRequest) -> Result<Vm, CloudError> {
        check_token(&request.token)?;
        let by_token = Tags::from([(TAG_CLIENT_TOKEN.to_string(), request.token.clone())]);
        if let Some(existing) = self
            .describe(&by_token, &[])
            .await?
            .iter()
            .map(|i| self.view(i))
            .find(|vm| vm.state != VmState::Terminated)
        {
            return Ok(existing);
        }
        let mut tags = TagSpecification::builder().resource_type(ResourceType::Instance);
        let mut volume_tags = TagSpecification::builder().resource_type(ResourceType::Volume);
        let mut launch_tags = request.tags.clone();
        launch_tags.insert("Name".into(), request.name.clone());
        launch_tags.insert(TAG_CLIENT_TOKEN.into(), request.token.clone());
        for (key, value) in &launch_tags {
            tags = tags.tags(Tag::builder().key(key).value(value).build());
            volume_tags = volume_tags.tags(Tag::builder().key(key).value(value).build());
        }
        let instance_type = request
            .instance_type
            .clone()
            .unwrap_or_else(|| self.config.instance_type.clone());
        let mut run = self
            .client
            .run_instances()
            .image_id(&self.config.image_id)
            .instance_type(InstanceType::from(instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&request.token)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&request.user_data))
            .tag_specifications(tags.build());
        if let Some(gib) = request.volume_gib {
            // The node's data volume is part of the launch and goes with the instance: no
            // window in which a crash leaves a volume without its VM, and none to sweep.
            run = run
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(DATA_VOLUME_DEVICE)
                        .ebs(
                            EbsBlockDevice::builder()
                                .volume_size(gib as i32)
                                .volume_type(VolumeType::Gp3)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(volume_tags.build());
        }
        if let Some(subnet) = &self.config.subnet_id {
            run = run.subnet_id(subnet);
        }
        for group in &self.config.security_group_ids {
            run = run.security_group_ids(group);
        }
        if let Some(key) = &self.config.key_name {
            run = run.key_name(key);
        }
        self.limits.wait("create").await;
        let out = run.send().await.map_err(map_error)?;
        let instance = out
            .instances()
            .first()
            .ok_or_else(|| CloudError::Other("RunInstances returned no instance".into()))?;
        Ok(self.view(instance))
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>, CloudError> {
        match self.describe(&Tags::new(), &[id.to_string()]).await {
            Ok(found) => Ok(found.first().map(|i| self.view(i))),
            Err(CloudError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, tags: &Tags) -> Result<Vec<Vm>, CloudError> {
        Ok(self
            .describe(tags, &[])
            .await?
            .iter()
            .map(|i| self.view(i))
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<(), CloudError> {
        self.limits.wait("delete").await;
        match self
            .client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(map_error)
        {
            Ok(_) | Err(CloudError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn set_tags(&self, id: &str, tags: &Tags) -> Result<(), CloudError> {
        if self.get(id).await?.is_none() {
            return Err(CloudError::NotFound(format!("ec2 instance {id}")));
        }
        let mut request = self.client.create_tags().resources(id);
        for (key, value) in tags {
            request = request.tags(Tag::builder().key(key).value(value).build());
        }
        self.limits.wait("tag").await;
        request.send().await.map_err(map_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::run_instances::RunInstancesError;

    /// What the SDK hands the driver when EC2 answers a RunInstances with `code`.
    fn answered(code: &str) -> SdkError<RunInstancesError, ()> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("the provider's own words")
            .build();
        SdkError::service_error(RunInstancesError::generic(meta), ())
    }

    // moto stops an instance at once: `stopping` is checked on the mapping itself.
    #[test]
    fn an_instance_on_its_way_to_stopped_is_halted_and_one_shutting_down_is_going() {
        let cases = [
            (InstanceStateName::Stopping, VmState::Halted),
            (InstanceStateName::Stopped, VmState::Halted),
            (InstanceStateName::ShuttingDown, VmState::Stopping),
            (InstanceStateName::Terminated, VmState::Terminated),
            (InstanceStateName::Running, VmState::Running),
        ];
        for (name, expected) in cases {
            assert_eq!(state(Some(&name)), expected, "{name:?}");
        }
    }

    // moto neither throttles nor refuses quota, so these codes are checked on the SDK's own
    // error values: each maps by meaning and keeps EC2's code and message for the user.
    #[test]
    fn ec2_error_codes_map_by_meaning() {
        let cases = [
            ("RequestLimitExceeded", "Throttled"),
            ("InstanceLimitExceeded", "QuotaExceeded"),
            ("VcpuLimitExceeded", "QuotaExceeded"),
            ("InsufficientInstanceCapacity", "QuotaExceeded"),
            ("AuthFailure", "Unauthorized"),
            ("UnauthorizedOperation", "Unauthorized"),
            ("InvalidInstanceID.NotFound", "NotFound"),
            ("IdempotentParameterMismatch", "AlreadyExists"),
            ("InternalError", "Transient"),
            ("ServiceUnavailable", "Transient"),
            ("InvalidAMIID.NotFound", "Other"),
            ("InvalidParameterValue", "Other"),
        ];
        for (code, category) in cases {
            let error = map_error(answered(code));
            assert_eq!(error.category(), category, "{code}");
            let text = error.to_string();
            assert!(
                text.contains(code) && text.contains("the provider's own words"),
                "{code}: {text}"
            );
        }
        let timeout = map_error(SdkError::<RunInstancesError, ()>::timeout_error("slow"));
        assert_eq!(timeout.category(), "Transient");
        assert!(!map_error(answered("InvalidAMIID.NotFound")).is_retryable());
        assert!(map_error(answered("RequestLimitExceeded")).is_retryable());
    }
}
