//! Exec: a configured command run on issue, renew and revoke. (Being written.)

pub struct ExecProvider;

impl ExecProvider {
    pub fn new(_policy_dir: std::path::PathBuf) -> Self {
        ExecProvider
    }
}

#[async_trait::async_trait]
impl super::Provider for ExecProvider {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn check(&self, _resource: &hourglass_policy::Resource) -> Result<(), String> {
        Err("the exec provider is not available yet".into())
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
