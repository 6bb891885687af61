//! SSH: OpenSSH user certificates signed by the broker's CA. (Being written.)

pub struct SshProvider;

impl SshProvider {
    pub fn load_or_create(_dir: &std::path::Path) -> Result<Self, String> {
        Ok(SshProvider)
    }
}

#[async_trait::async_trait]
impl super::Provider for SshProvider {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    fn check(&self, _resource: &hourglass_policy::Resource) -> Result<(), String> {
        Err("the ssh provider is not available yet".into())
    }

    async fn issue(&self, input: super::IssueInput<'_>) -> Result<super::Issued, super::ProviderError> {
        Err(super::ProviderError::failed(&input.resource.name, "not available yet"))
    }

    async fn renew(
        &self,
        input: super::IssueInput<'_>,
        _state: &serde_json::Value,
    ) -> Result<super::Issued, super::ProviderError> {
        Err(super::ProviderError::failed(&input.resource.name, "not available yet"))
    }

    async fn revoke(
        &self,
        grant: &hourglass_core::Grant,
        _state: &serde_json::Value,
        _now: hourglass_core::Timestamp,
    ) -> Result<super::Verification, super::ProviderError> {
        Err(super::ProviderError::failed(&grant.resource, "not available yet"))
    }

    async fn credential(
        &self,
        input: super::IssueInput<'_>,
        _state: &serde_json::Value,
    ) -> Result<hourglass_core::api::Credential, super::ProviderError> {
        Err(super::ProviderError::failed(&input.resource.name, "not available yet"))
    }
}
