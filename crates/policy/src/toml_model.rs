//! `hourglass.toml` as written. Turned into the validated model in `model.rs`.

use std::collections::BTreeMap;

use hourglass_core::{ApprovalRule, Duration};
use serde::Deserialize;
use toml::Spanned;

/// Declares a model struct that also carries the lifetime and requirement
/// settings layered role > resource > `[defaults]`. serde cannot combine
/// `flatten` with `deny_unknown_fields`, and a misspelt `max_duraton` must be
/// an error rather than a silent default, so the fields are spliced in.
macro_rules! with_bounds {
    ($(#[$meta:meta])* struct $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub(crate) struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
            /// The approval workflow, by name.
            pub workflow: Option<String>,
            pub min_duration: Option<Duration>,
            pub max_duration: Option<Duration>,
            pub default_duration: Option<Duration>,
            pub max_total: Option<Duration>,
            pub renewals_without_approval: Option<u32>,
            pub pending_timeout: Option<Duration>,
            pub reason_required: Option<bool>,
            pub ticket_required: Option<bool>,
            /// Channels (`[broker.channels.NAME]`) that announce a request
            /// to its approvers and follow it to its decision.
            pub notify: Option<Vec<String>>,
            /// Channels that tell the requester of the decision, of the
            /// grant's end drawing near, and of its end.
            pub notify_requester: Option<Vec<String>>,
            /// An approver must have logged in at their identity provider
            /// within this long to decide (`"5m"`), on every surface.
            pub approval_max_auth_age: Option<Duration>,
            /// An approver's login must have used one of these methods
            /// (the ID token's `amr`: `"mfa"`, `"hwk"`, `"otp"`…).
            pub approval_auth_methods: Option<Vec<String>>,
        }

        impl $name {
            #[allow(dead_code, reason = "Bounds itself never needs converting")]
            pub fn bounds(&self) -> Bounds {
                Bounds {
                    workflow: self.workflow.clone(),
                    min_duration: self.min_duration,
                    max_duration: self.max_duration,
                    default_duration: self.default_duration,
                    max_total: self.max_total,
                    renewals_without_approval: self.renewals_without_approval,
                    pending_timeout: self.pending_timeout,
                    reason_required: self.reason_required,
                    ticket_required: self.ticket_required,
                    notify: self.notify.clone(),
                    notify_requester: self.notify_requester.clone(),
                    approval_max_auth_age: self.approval_max_auth_age,
                    approval_auth_methods: self.approval_auth_methods.clone(),
                }
            }
        }
    };
}

with_bounds!(
    /// The layered settings on their own: `[defaults]`, and the merge result.
    struct Bounds {}
);

with_bounds!(
    struct ResourceModel {
        description: Option<String>,
        provider: String,
        labels: Option<Vec<String>>,
        /// Provider settings, checked by the provider itself.
        settings: Option<toml::Table>,
        roles: BTreeMap<String, Spanned<RoleModel>>,
    }
);

with_bounds!(
    struct RoleModel {
        description: Option<String>,
        /// Provider settings for this role (database roles, SSH principals…).
        settings: Option<toml::Table>,
    }
);

impl Bounds {
    /// `self` where set, otherwise `fallback`.
    pub fn or(&self, fallback: &Bounds) -> Bounds {
        Bounds {
            workflow: self.workflow.clone().or_else(|| fallback.workflow.clone()),
            min_duration: self.min_duration.or(fallback.min_duration),
            max_duration: self.max_duration.or(fallback.max_duration),
            default_duration: self.default_duration.or(fallback.default_duration),
            max_total: self.max_total.or(fallback.max_total),
            renewals_without_approval: self.renewals_without_approval.or(fallback.renewals_without_approval),
            pending_timeout: self.pending_timeout.or(fallback.pending_timeout),
            reason_required: self.reason_required.or(fallback.reason_required),
            ticket_required: self.ticket_required.or(fallback.ticket_required),
            notify: self.notify.clone().or_else(|| fallback.notify.clone()),
            notify_requester: self.notify_requester.clone().or_else(|| fallback.notify_requester.clone()),
            approval_max_auth_age: self.approval_max_auth_age.or(fallback.approval_max_auth_age),
            approval_auth_methods: self
                .approval_auth_methods
                .clone()
                .or_else(|| fallback.approval_auth_methods.clone()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileModel {
    /// The broker's own settings (listen address, store, identity
    /// providers). Read by `hourglassd`, not part of the policy.
    #[serde(default)]
    pub broker: Option<toml::Table>,
    #[serde(default)]
    pub defaults: Bounds,
    #[serde(default)]
    pub workflows: BTreeMap<String, Spanned<WorkflowModel>>,
    #[serde(default)]
    pub resources: BTreeMap<String, Spanned<ResourceModel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkflowModel {
    #[serde(default)]
    pub description: String,
    pub approvals: Vec<ApprovalRule>,
    pub pending_timeout: Option<Duration>,
    /// Channels its approvers hear of requests on, beside those of the
    /// role (`notify`): the channel of the team the workflow asks.
    #[serde(default)]
    pub notify: Vec<String>,
}
