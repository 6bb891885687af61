//! Each person's own choice of how they hear about their requests and
//! access: of the channels policy tells requesters on (`notify_requester`),
//! the ones they muted. Kept in the store (`preferences/PRINCIPAL`); the
//! outbox's sender skips a muted channel's message when it is due.

use std::collections::BTreeSet;

use hourglass_core::Principal;
use hourglass_core::api::{ErrorCode, NotificationChoice, PersonalChannel};
use serde::{Deserialize, Serialize};

use super::refused;
use crate::broker::Broker;
use crate::error::Result;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Preferences {
    #[serde(default)]
    muted: BTreeSet<String>,
}

fn document(principal: &str) -> String {
    format!("preferences/{principal}")
}

impl Broker {
    /// The channels that can tell requesters, as `who` chose them.
    pub async fn personal_channels(&self, who: &Principal) -> Result<Vec<PersonalChannel>> {
        let muted = self.muted_channels(&who.id).await?;
        Ok(self
            .requester_channels()
            .into_iter()
            .map(|(name, kind)| {
                let enabled = !muted.contains(&name);
                PersonalChannel { name, kind: kind.to_owned(), enabled }
            })
            .collect())
    }

    /// `PUT /v1/me/notifications`
    pub async fn choose_channels(&self, who: &Principal, choice: NotificationChoice) -> Result<Vec<PersonalChannel>> {
        let known: BTreeSet<String> = self.requester_channels().into_iter().map(|(name, _)| name).collect();
        if let Some(unknown) = choice.muted.iter().find(|name| !known.contains(*name)) {
            let offered = known.iter().cloned().collect::<Vec<_>>().join(", ");
            return Err(refused(
                ErrorCode::InvalidRequest,
                format!("no channel \"{unknown}\" tells requesters here (they are: {offered})"),
            ));
        }
        let preferences = Preferences { muted: choice.muted.into_iter().collect() };
        let mut tx = self.store.begin().await?;
        tx.document_for_update(&document(&who.id)).await?;
        tx.put_document(&document(&who.id), &serde_json::to_string(&preferences).unwrap_or_default()).await?;
        tx.commit().await?;
        self.personal_channels(who).await
    }

    /// The channels `principal` muted.
    pub(crate) async fn muted_channels(&self, principal: &str) -> Result<BTreeSet<String>> {
        Ok(match self.store.document(&document(principal)).await? {
            Some(text) => serde_json::from_str::<Preferences>(&text).unwrap_or_default().muted,
            None => BTreeSet::new(),
        })
    }

    /// Every channel some role tells requesters on, with its kind.
    fn requester_channels(&self) -> Vec<(String, &'static str)> {
        let policy = self.policy();
        let names: BTreeSet<String> = policy
            .resources
            .values()
            .flat_map(|resource| resource.roles.values())
            .flat_map(|role| role.notify_requester.iter().cloned())
            .collect();
        names
            .into_iter()
            .filter_map(|name| self.channels.get(&name).map(|channel| channel.kind()).map(|kind| (name, kind)))
            .collect()
    }
}
